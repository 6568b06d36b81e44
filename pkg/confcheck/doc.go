// Package confcheck names configuration mistakes in the operator's
// terms. A value of the wrong form is reported by its key and the form
// the key takes (`mtu: want a number, got "1500"`), never by the Go type
// it was to be decoded into; a key that nothing reads is reported with
// the known key it most likely misspells (`unknown key "ipMasg" (did you
// mean "ipMasq"?)`).
//
// The package knows no keys itself: the core, the ipam section and each
// driver declare theirs, and the plugins' ADD and `cnmctl validate` both
// report through this package, so that they say the same thing about the
// same mistake. Keys are matched as encoding/json matches them, exactly
// or else regardless of case, so that a key the plugins do read is never
// called unknown.
package confcheck
