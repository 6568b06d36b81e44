package confcheck

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ValueError is a key whose value does not have the form the key takes.
type ValueError struct {
	// Key is the path of the key: "mtu", "ipam.ranges[0][0].subnet".
	Key string
	// Want is the form the key takes: "a number".
	Want string
	// Got is the value as written (shortened), or its kind when the
	// value itself cannot be singled out; "" leaves it out.
	Got string
}

func (e *ValueError) Error() string {
	msg := "want " + e.Want
	if e.Got != "" {
		msg += ", got " + e.Got
	}
	if e.Key == "" {
		return msg
	}
	return e.Key + ": " + msg
}

// Absent reports whether a value is missing: empty or null.
func Absent(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || string(s) == "null"
}

// Decode decodes raw, the value of key, into v; an absent value leaves v
// as it is. A value of the wrong form is a *ValueError naming key, or
// the key inside it that is wrong; an error of v's own decoding (a
// json.Unmarshaler's) is prefixed with key. raw is valid JSON: a value
// of an object decoded already.
func Decode(key string, raw json.RawMessage, v any) error {
	if Absent(raw) {
		return nil
	}
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return typeError(key, raw, te)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%s: not valid JSON: %v", orDocument(key), se)
	}
	if key == "" {
		return err
	}
	return fmt.Errorf("%s: %w", key, err)
}

// ObjectError says why a whole configuration is not a JSON object: it
// does not parse, or it is another kind of value. It is nil for an
// object (or null, which decodes as an empty one).
func ObjectError(raw []byte) error {
	var m map[string]json.RawMessage
	err := json.Unmarshal(raw, &m)
	var se *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case len(bytes.TrimSpace(raw)) == 0:
		return errors.New("not valid JSON: empty")
	case errors.As(err, &se):
		return fmt.Errorf("not valid JSON: %v (at byte %d)", se, se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("want a JSON object, got %s", kindOf(te.Value))
	}
	return fmt.Errorf("not valid JSON: %v", err)
}

// Object decodes raw as a JSON object; ok is false when it is not one.
func Object(raw json.RawMessage) (obj map[string]json.RawMessage, ok bool) {
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

// Join is the path of key inside the value at path.
func Join(path, key string) string {
	switch {
	case path == "":
		return key
	case key == "":
		return path
	}
	return path + "." + key
}

// Shorten is a JSON value as an operator reads it in a message: compact,
// and cut after 60 bytes.
func Shorten(raw json.RawMessage) string {
	var b bytes.Buffer
	s := raw
	if json.Compact(&b, raw) == nil {
		s = b.Bytes()
	}
	const max = 60
	if len(s) <= max {
		return string(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return string(s[:cut]) + "…"
}

func orDocument(key string) string {
	if key == "" {
		return "the configuration"
	}
	return key
}

// typeError turns encoding/json's type error, which speaks of Go types,
// into a ValueError. te.Field is the path inside raw, without list
// indices; the element of a list or map is named by its container.
func typeError(key string, raw json.RawMessage, te *json.UnmarshalTypeError) *ValueError {
	e := &ValueError{Key: Join(key, te.Field)}
	want, wants := describe(te.Type, te.Value)
	e.Want, e.Got = want, kindOf(te.Value)
	v, found := lookup(raw, te.Field)
	switch {
	case !found:
	case sameKind(v, te.Value):
		e.Got = Shorten(v)
	case firstByte(v) == '[':
		e.Want, e.Got = "a list of "+wants, Shorten(v)
	case firstByte(v) == '{':
		e.Want, e.Got = "an object of "+wants, Shorten(v)
	}
	return e
}

// lookup finds the value at path (dot-separated keys) inside raw,
// matching keys as encoding/json does. A path through a list is not
// found: it does not say which element.
func lookup(raw json.RawMessage, path string) (json.RawMessage, bool) {
	if path == "" {
		return raw, true
	}
	for _, k := range strings.Split(path, ".") {
		obj, ok := Object(raw)
		if !ok {
			return nil, false
		}
		v, ok := lookupKey(obj, k)
		if !ok {
			return nil, false
		}
		raw = v
	}
	return raw, true
}

func lookupKey(obj map[string]json.RawMessage, k string) (json.RawMessage, bool) {
	if v, ok := obj[k]; ok {
		return v, true
	}
	for key, v := range obj {
		if strings.EqualFold(key, k) {
			return v, true
		}
	}
	return nil, false
}

func firstByte(raw json.RawMessage) byte {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return 0
	}
	return s[0]
}

// sameKind reports whether the JSON value raw is of the kind encoding/json
// describes as value ("string", "number 1.5", "array", "object", "bool").
func sameKind(raw json.RawMessage, value string) bool {
	c := firstByte(raw)
	switch kind, _, _ := strings.Cut(value, " "); kind {
	case "string":
		return c == '"'
	case "number":
		return c == '-' || '0' <= c && c <= '9'
	case "array":
		return c == '['
	case "object":
		return c == '{'
	case "bool":
		return c == 't' || c == 'f'
	}
	return false
}

// kindOf names encoding/json's description of a value for an operator.
func kindOf(value string) string {
	kind, literal, _ := strings.Cut(value, " ")
	switch kind {
	case "string":
		return "a string"
	case "number":
		if literal != "" {
			return literal
		}
		return "a number"
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "bool":
		return "true or false"
	}
	return value
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	rawMessage      = reflect.TypeFor[json.RawMessage]()
)

// describe is the form of values of t, singular and plural; value is
// what was found instead, to tell a number out of range from a string.
func describe(t reflect.Type, value string) (string, string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessage || t.Kind() == reflect.Interface {
		return "a JSON value", "JSON values"
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string", "strings"
	}
	number := strings.HasPrefix(value, "number")
	switch t.Kind() {
	case reflect.String:
		return "a string", "strings"
	case reflect.Bool:
		return "true or false", "true or false values"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if number {
			lo := int64(-1) << (t.Bits() - 1)
			return intRange(value, lo, -(lo + 1))
		}
		return "a number", "numbers"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if number {
			return intRange(value, 0, uint64(math.MaxUint64)>>(64-t.Bits()))
		}
		return "a number", "numbers"
	case reflect.Float32, reflect.Float64:
		return "a number", "numbers"
	case reflect.Slice, reflect.Array:
		_, elems := describe(t.Elem(), "")
		return "a list of " + elems, "lists"
	case reflect.Map, reflect.Struct:
		return "an object", "objects"
	}
	return "a JSON value", "JSON values"
}

// intRange is the form of an integer that a number did not fit: it has
// a fraction, it is out of range, or it is written with an exponent or
// a fraction of zero ("1e3", "80.0"), which encoding/json refuses too.
func intRange[T int64 | uint64](value string, lo, hi T) (string, string) {
	_, literal, _ := strings.Cut(value, " ")
	f, err := strconv.ParseFloat(literal, 64)
	switch {
	case err == nil && f != math.Trunc(f):
		return "a whole number", "whole numbers"
	case err == nil && f >= float64(lo) && f <= float64(hi) && strings.ContainsAny(literal, ".eE"):
		return "a whole number in digits alone", "whole numbers in digits alone"
	}
	return fmt.Sprintf("a whole number from %d to %d", lo, hi), fmt.Sprintf("whole numbers from %d to %d", lo, hi)
}
