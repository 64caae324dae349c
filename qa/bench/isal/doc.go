// Package isal calls Intel ISA-L's RAID parity routines (xor_gen, pq_gen from Debian's libisal-dev)
// through cgo, as the reference qa/bench sets raid/parity against. The cgo half is built only with the isal
// build tag, so that go build, go vet and go test of the module never need cgo or libisal; without the tag,
// Available is false and every call returns ErrUnavailable.
package isal

import "errors"

// Align is the alignment ISA-L wants of every vector, in bytes (32 for its AVX2 and AVX-512 code).
const Align = 32

// ErrUnavailable is what every call returns without the isal build tag.
var ErrUnavailable = errors.New("isal: not built in; build the bench with -tags isal (needs cgo and Debian's libisal-dev)")
