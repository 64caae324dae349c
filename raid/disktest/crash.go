package disktest

import (
	"errors"
	"sync"

	"opensan/gateway/block"
)

// ErrCrashed is returned by every operation on a disk after Crash.
var ErrCrashed = errors.New("disktest: disk crashed (power lost)")

// Crashable is a memory disk that tracks durability. A write is durable once a later Flush returned, or at
// once if written with WriteAtFUA; Crash loses power and returns the disk as it comes back: the durable
// image plus whichever unflushed writes the caller lets survive (a real disk may have written any of them).
type Crashable struct {
	mu       sync.Mutex
	live     *block.Memory // what reads see
	durable  *block.Memory // what survives a crash for sure
	pending  []pendingWrite
	crashed  bool
	size     int64
	bs       int
	flushes  int
	fuaCount int
}

// pendingWrite is a write that completed but is not yet durable, in completion order.
type pendingWrite struct {
	off  int64
	data []byte // nil for a discard of length discard
	zero int64
	fua  bool // durable already: survives every crash
}

// NewCrashable returns an empty crashable disk of size bytes with logical block size bs.
func NewCrashable(size int64, bs int) *Crashable {
	return &Crashable{live: block.NewMemory(size, bs), durable: block.NewMemory(size, bs), size: size - size%int64(bs), bs: bs}
}

func (c *Crashable) Size() int64           { return c.size }
func (c *Crashable) LogicalBlockSize() int { return c.bs }
func (c *Crashable) Close() error          { return nil }

func (c *Crashable) op(name string, off, n int64) error {
	if c.crashed {
		return &block.OpError{Op: name, Device: "crashable", Offset: off, Length: n, Err: ErrCrashed}
	}
	if err := block.CheckRange(off, n, c.size, c.bs); err != nil {
		return &block.OpError{Op: name, Device: "crashable", Offset: off, Length: n, Err: err}
	}
	return nil
}

func (c *Crashable) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.op("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	return c.live.ReadAt(p, off)
}

func (c *Crashable) WriteAt(p []byte, off int64) (int, error) { return c.write(p, off, false) }

// WriteAtFUA writes p durably: it survives any later crash (unless overwritten by a lost later write).
func (c *Crashable) WriteAtFUA(p []byte, off int64) (int, error) { return c.write(p, off, true) }

func (c *Crashable) write(p []byte, off int64, fua bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.op("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if fua {
		c.fuaCount++
	}
	c.pending = append(c.pending, pendingWrite{off: off, data: append([]byte(nil), p...), fua: fua})
	return c.live.WriteAt(p, off)
}

func (c *Crashable) Discard(off, length int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.op("discard", off, length); err != nil {
		return err
	}
	c.pending = append(c.pending, pendingWrite{off: off, zero: length})
	return c.live.Discard(off, length)
}

// Flush makes every completed write durable.
func (c *Crashable) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.op("flush", 0, 0); err != nil {
		return err
	}
	for _, w := range c.pending {
		w.apply(c.durable)
	}
	c.pending = c.pending[:0]
	c.flushes++
	return nil
}

func (w pendingWrite) apply(m *block.Memory) {
	if w.data != nil {
		m.WriteAt(w.data, w.off)
	} else {
		m.Discard(w.off, w.zero)
	}
}

// Pending is the number of completed writes (and discards) not yet made durable by a Flush.
func (c *Crashable) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Flushes is the number of Flush calls that succeeded.
func (c *Crashable) Flushes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushes
}

// Crash cuts the power: every later operation on c fails with ErrCrashed. It returns the disk as it powers
// back on: the durable image, then, in completion order, the FUA writes and those unflushed writes for
// which survive(i) (i counts unflushed writes from 0) returns true. survive nil loses every unflushed write.
func (c *Crashable) Crash(survive func(i int) bool) *Crashable {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crashed = true
	img := block.NewMemory(c.size, c.bs)
	copyMemory(img, c.durable, c.size)
	for i, w := range c.pending {
		if w.fua || (survive != nil && survive(i)) {
			w.apply(img)
		}
	}
	next := &Crashable{live: img, durable: block.NewMemory(c.size, c.bs), size: c.size, bs: c.bs}
	copyMemory(next.durable, img, c.size)
	return next
}

func copyMemory(dst, src *block.Memory, size int64) {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		src.ReadAt(buf[:n], off)
		if !allZero(buf[:n]) {
			dst.WriteAt(buf[:n], off)
		}
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
