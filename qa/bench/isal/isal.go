//go:build isal

package isal

/*
#cgo LDFLAGS: -lisal
#include <stdlib.h>
#include <isa-l/raid.h>

// The loops run in C so that the cgo call (some 50 ns) is paid once per measurement, not once per stripe:
// ISA-L is timed as a C program would time it.
static int xor_loop(int vects, int len, void **array, long iters) {
	for (long i = 0; i < iters; i++) {
		int r = xor_gen(vects, len, array);
		if (r != 0) return r;
	}
	return 0;
}
static int pq_loop(int vects, int len, void **array, long iters) {
	for (long i = 0; i < iters; i++) {
		int r = pq_gen(vects, len, array);
		if (r != 0) return r;
	}
	return 0;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Available reports whether the bench was built with ISA-L (the isal build tag).
const Available = true

// XorGen sets dst to the XOR of srcs, iters times over (the same result each time). ISA-L's xor_gen:
// every slice of the same length, a multiple of 32 bytes, 32-byte aligned.
func XorGen(srcs [][]byte, dst []byte, iters int) error {
	return gen("xor_gen", append(append([][]byte{}, srcs...), dst), 1, iters)
}

// PQGen sets p and q to md's RAID6 syndromes of srcs (P the XOR, Q the sum of 2^k * D_k over GF(2^8) mod
// 0x11d), iters times over. ISA-L's pq_gen, with the same constraints as XorGen.
func PQGen(srcs [][]byte, p, q []byte, iters int) error {
	return gen("pq_gen", append(append([][]byte{}, srcs...), p, q), 2, iters)
}

func gen(name string, vecs [][]byte, parity, iters int) error {
	n := len(vecs[0])
	if n == 0 || n%Align != 0 || n > 1<<30 {
		return fmt.Errorf("isal %s: vector length %d is not a positive multiple of %d under 1 GiB", name, n, Align)
	}
	if len(vecs) < parity+1 {
		return fmt.Errorf("isal %s: %d vectors, want at least %d", name, len(vecs), parity+1)
	}
	// The pointer array lives in C memory: cgo forbids passing Go memory that holds Go pointers.
	arr := (*[1 << 20]unsafe.Pointer)(C.malloc(C.size_t(len(vecs)) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:len(vecs):len(vecs)]
	defer C.free(unsafe.Pointer(&arr[0]))
	var pin runtime.Pinner
	defer pin.Unpin()
	for i, v := range vecs {
		if len(v) != n {
			return fmt.Errorf("isal %s: vector %d is %d bytes, want %d", name, i, len(v), n)
		}
		if uintptr(unsafe.Pointer(&v[0]))%Align != 0 {
			return fmt.Errorf("isal %s: vector %d is not %d-byte aligned", name, i, Align)
		}
		pin.Pin(&v[0])
		arr[i] = unsafe.Pointer(&v[0])
	}
	var r C.int
	if parity == 1 {
		r = C.xor_loop(C.int(len(vecs)), C.int(n), &arr[0], C.long(iters))
	} else {
		r = C.pq_loop(C.int(len(vecs)), C.int(n), &arr[0], C.long(iters))
	}
	if r != 0 {
		return fmt.Errorf("isal %s: returned %d", name, int(r))
	}
	return nil
}
