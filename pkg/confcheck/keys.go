package confcheck

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Unknown is a key of a configuration object that nothing reads.
type Unknown struct {
	// Key is the path of the key: "ipMasg", "ipam.ranges[0][0].rangeStrat".
	Key string `json:"key"`
	// Suggestion is the known key of that object it most likely
	// misspells; "" when none is close.
	Suggestion string `json:"suggestion,omitempty"`
}

// String is `unknown key "ipMasg" (did you mean "ipMasq"?)`.
func (u Unknown) String() string {
	return fmt.Sprintf("unknown key %q%s", u.Key, u.hint())
}

// Problem is what is wrong with the key, for a listing that names the
// key apart: `unknown key (did you mean "ipMasq"?)`.
func (u Unknown) Problem() string { return "unknown key" + u.hint() }

func (u Unknown) hint() string {
	if u.Suggestion == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", u.Suggestion)
}

// Keys are the keys one configuration object takes.
type Keys struct {
	// Names are the keys, matched as encoding/json matches them.
	Names []string
	// Prefixes make every key that starts with one known ("cni.dev/").
	Prefixes []string
	// Exact matches the names in their case only, for an object its
	// reader decodes into a map rather than a struct.
	Exact bool
}

// Known reports whether key is one of k.
func (k Keys) Known(key string) bool {
	for _, p := range k.Prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	for _, n := range k.Names {
		if n == key || !k.Exact && strings.EqualFold(n, key) { // encoding/json reads it
			return true
		}
	}
	return false
}

// Unknown lists the keys of obj, the object at path, that k does not
// know, in order, each with a suggestion among k.Names.
func (k Keys) Unknown(path string, obj map[string]json.RawMessage) []Unknown {
	var out []Unknown
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		if !k.Known(key) {
			out = append(out, Unknown{Key: Join(path, key), Suggestion: Suggest(key, k.Names)})
		}
	}
	return out
}

// With is k with more names.
func (k Keys) With(names ...string) Keys {
	k.Names = append(slices.Clone(k.Names), names...)
	return k
}

// Tags are the JSON keys of the struct v's fields, as encoding/json
// names them (fields of embedded structs included): the keys a type
// decodes is the one list of them.
func Tags(v any) []string {
	var names []string
	t := deref(reflect.TypeOf(v))
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous && f.Tag.Get("json") == "" && deref(f.Type).Kind() == reflect.Struct {
			continue // unexported, or an embedded struct whose fields are listed
		}
		if len(f.Index) > 1 && !embeddedPath(t, f.Index) {
			continue // a field of a named struct field, not an embedded one
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// embeddedPath reports whether every field on the way to index but the
// last is an untagged embedded struct, whose fields encoding/json lifts.
func embeddedPath(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		f := t.Field(i)
		if !f.Anonymous || f.Tag.Get("json") != "" {
			return false
		}
		t = deref(f.Type)
	}
	return true
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// Suggest is the name among known that key most likely misspells: the
// nearest within two edits (letters swapped, missing, extra or wrong,
// case aside) and fewer than half of the shorter's letters, or the one
// key starts the other of, four letters at least ("hairpin",
// "hairpinMode"). "" when none is that close.
func Suggest(key string, known []string) string {
	best, bestDist := "", 0
	lk := strings.ToLower(key)
	for _, name := range known {
		ln := strings.ToLower(name)
		d := distance(lk, ln)
		short := min(len(lk), len(ln))
		close := d <= 2 && 2*d < short ||
			short >= 4 && (strings.HasPrefix(ln, lk) || strings.HasPrefix(lk, ln))
		if !close {
			continue
		}
		if best == "" || d < bestDist || d == bestDist && name < best {
			best, bestDist = name, d
		}
	}
	return best
}

// distance is the optimal string alignment distance of a and b: the
// edits (insertions, deletions, substitutions, swaps of two adjacent
// bytes) that turn one into the other.
func distance(a, b string) int {
	// rows i-2, i-1 and i of the edit matrix
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
