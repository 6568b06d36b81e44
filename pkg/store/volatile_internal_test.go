package store

import (
	"bytes"
	"maps"
	"testing"
)

// FuzzVolatileFile feeds the decoder of the volatile file's body any
// bytes: it reads them whole or not at all, never panics, and what it
// reads encodes back to the same bytes.
func FuzzVolatileFile(f *testing.F) {
	f.Add(overlay{"a": []byte("1"), "b": nil, "c": {}, "net/\xff": []byte("x")}.encode())
	f.Add([]byte{})
	f.Add([]byte{1, 'a', 2})
	f.Fuzz(func(t *testing.T, body []byte) {
		ov := decodeOverlay(body)
		if ov == nil {
			return
		}
		again := decodeOverlay(ov.encode())
		if !maps.EqualFunc(ov, again, func(a, b []byte) bool { return bytes.Equal(a, b) && (a == nil) == (b == nil) }) {
			t.Fatalf("%q decodes to %q, which encodes to something that decodes to %q", body, ov, again)
		}
	})
}
