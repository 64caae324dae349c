//go:build !isal

package isal

// Available reports whether the bench was built with ISA-L (the isal build tag).
const Available = false

// XorGen would set dst to the XOR of srcs with ISA-L's xor_gen; without the isal tag it fails.
func XorGen(srcs [][]byte, dst []byte, iters int) error { return ErrUnavailable }

// PQGen would set p and q to md's RAID6 syndromes of srcs with ISA-L's pq_gen; without the isal tag it fails.
func PQGen(srcs [][]byte, p, q []byte, iters int) error { return ErrUnavailable }
