package block

import (
	"sync"
)

// memoryPageSize is the unit in which a Memory device allocates and locks, in bytes.
const memoryPageSize = 64 << 10

// Memory is a Device held in RAM, allocated lazily page by page so that a large, mostly empty disk costs
// little. It is the in-memory disk of tests and benchmarks; Flush and Close do nothing.
type Memory struct {
	size  int64
	bs    int
	pages []memoryPage
}

type memoryPage struct {
	mu   sync.RWMutex
	data []byte // nil until first written: reads as zeros
}

// NewMemory returns a zero-filled memory device of size bytes with logical block size bs.
func NewMemory(size int64, bs int) *Memory {
	if !ValidBlockSize(bs) {
		panic("block: invalid logical block size")
	}
	size -= size % int64(bs)
	return &Memory{size: size, bs: bs, pages: make([]memoryPage, (size+memoryPageSize-1)/memoryPageSize)}
}

func (m *Memory) Size() int64           { return m.size }
func (m *Memory) LogicalBlockSize() int { return m.bs }
func (m *Memory) Flush() error          { return nil }
func (m *Memory) Close() error          { return nil }

// ReadAt reads len(p) bytes at byte offset off. Unlike a file, a Memory device accepts unaligned I/O.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size || int64(len(p)) > m.size-off {
		return 0, &OpError{Op: "read", Device: "memory", Offset: off, Length: int64(len(p)), Err: ErrOutOfRange}
	}
	n := 0
	for n < len(p) {
		pg, in := (off+int64(n))/memoryPageSize, int((off+int64(n))%memoryPageSize)
		chunk := min(len(p)-n, memoryPageSize-in)
		page := &m.pages[pg]
		page.mu.RLock()
		if page.data == nil {
			clear(p[n : n+chunk])
		} else {
			copy(p[n:n+chunk], page.data[in:])
		}
		page.mu.RUnlock()
		n += chunk
	}
	return n, nil
}

// WriteAt writes p at byte offset off.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size || int64(len(p)) > m.size-off {
		return 0, &OpError{Op: "write", Device: "memory", Offset: off, Length: int64(len(p)), Err: ErrOutOfRange}
	}
	n := 0
	for n < len(p) {
		pg, in := (off+int64(n))/memoryPageSize, int((off+int64(n))%memoryPageSize)
		chunk := min(len(p)-n, memoryPageSize-in)
		page := &m.pages[pg]
		page.mu.Lock()
		if page.data == nil {
			page.data = make([]byte, memoryPageSize)
		}
		copy(page.data[in:], p[n:n+chunk])
		page.mu.Unlock()
		n += chunk
	}
	return n, nil
}

// Discard zeroes [off, off+length) and frees whole pages inside it.
func (m *Memory) Discard(off, length int64) error {
	if off < 0 || length < 0 || off > m.size || length > m.size-off {
		return &OpError{Op: "discard", Device: "memory", Offset: off, Length: length, Err: ErrOutOfRange}
	}
	for done := int64(0); done < length; {
		pg, in := (off+done)/memoryPageSize, (off+done)%memoryPageSize
		chunk := min(length-done, memoryPageSize-in)
		page := &m.pages[pg]
		page.mu.Lock()
		if chunk == memoryPageSize {
			page.data = nil
		} else if page.data != nil {
			clear(page.data[in : in+chunk])
		}
		page.mu.Unlock()
		done += chunk
	}
	return nil
}
