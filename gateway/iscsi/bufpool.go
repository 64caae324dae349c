package iscsi

import (
	"math/bits"
	"sync"
)

// Write buffers are pooled by power-of-two size class, from 4 KiB to 16 MiB (the largest MaxBurstLength
// we offer is also the largest buffer worth keeping).
const (
	minBufClass = 12
	maxBufClass = 24
)

var bufPools [maxBufClass + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufClass {
		return minBufClass
	}
	return bits.Len(uint(n - 1))
}

// getBuf returns a buffer of length n, from the pool when its class is pooled.
func getBuf(n int) []byte {
	c := bufClass(n)
	if c > maxBufClass {
		return make([]byte, n)
	}
	if v, ok := bufPools[c].Get().(*[]byte); ok {
		return (*v)[:n]
	}
	return make([]byte, n, 1<<c)
}

// putBuf returns b to its pool; buffers of other capacities are left to the garbage collector.
func putBuf(b []byte) {
	c := bufClass(cap(b))
	if c > maxBufClass || cap(b) != 1<<c {
		return
	}
	b = b[:0]
	bufPools[c].Put(&b)
}
