package disktest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"opensan/gateway/block"
)

var _ block.Device = (*Crashable)(nil)
var _ block.FUAWriter = (*Crashable)(nil)
var _ block.Device = (*Faulty)(nil)

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, 512) }

func read(t *testing.T, d block.Device, off int64) byte {
	t.Helper()
	p := make([]byte, d.LogicalBlockSize())
	if _, err := d.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p[0]
}

func TestCrashKeepsOnlyDurable(t *testing.T) {
	c := NewCrashable(1<<20, 512)
	c.WriteAt(fill(1), 0)
	c.WriteAt(fill(2), 512)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.WriteAt(fill(3), 0)       // lost
	c.WriteAtFUA(fill(4), 1024) // durable at once
	c.WriteAt(fill(5), 1536)    // lost
	if read(t, c, 0) != 3 {
		t.Fatal("live read does not see the unflushed write")
	}
	if c.Pending() != 3 {
		t.Fatalf("pending %d", c.Pending())
	}
	d := c.Crash(nil)
	if _, err := c.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("old disk still works after crash: %v", err)
	}
	if got := []byte{read(t, d, 0), read(t, d, 512), read(t, d, 1024), read(t, d, 1536)}; !bytes.Equal(got, []byte{1, 2, 4, 0}) {
		t.Fatalf("after crash %v, want [1 2 4 0]", got)
	}
}

func TestCrashSomeSurvive(t *testing.T) {
	c := NewCrashable(1<<20, 4096)
	p := bytes.Repeat([]byte{7}, 4096)
	c.WriteAt(p, 0)
	c.WriteAt(bytes.Repeat([]byte{8}, 4096), 4096)
	d := c.Crash(func(i int) bool { return i == 1 })
	if read(t, d, 0) != 0 || read(t, d, 4096) != 8 {
		t.Fatal("survivor selection wrong")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(p[:100], 0); !errors.Is(err, block.ErrUnaligned) {
		t.Fatalf("unaligned write: %v", err)
	}
}

func TestFaulty(t *testing.T) {
	f := NewFaulty(block.NewMemory(1<<20, 512), "d0")
	f.Inject(Fault{Op: OpWrite, From: 4096, To: 8192, Skip: 1, Times: 1})
	if _, err := f.WriteAt(fill(1), 4096); err != nil { // skipped
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fill(1), 0); err != nil { // outside the range
		t.Fatal(err)
	}
	_, err := f.WriteAt(fill(1), 8192-512) // fires
	var oe *block.OpError
	if !errors.Is(err, ErrInjected) || !errors.As(err, &oe) || oe.Device != "d0" || oe.Offset != 8192-512 {
		t.Fatalf("want injected error at 7680 on d0, got %v", err)
	}
	if _, err := f.WriteAt(fill(1), 4096); err != nil { // Times exhausted
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 512), 4096); err != nil {
		t.Fatal(err)
	}
	f.Inject(Fault{Op: OpRead, Delay: 20 * time.Millisecond, Times: 1})
	start := time.Now()
	if _, err := f.ReadAt(make([]byte, 512), 0); err != nil || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("delay: %v after %v", err, time.Since(start))
	}
	f.Inject(Fault{Op: OpFlush, Vanish: true})
	if err := f.Flush(); !errors.Is(err, ErrGone) {
		t.Fatalf("vanish: %v", err)
	}
	if _, err := f.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrGone) {
		t.Fatalf("gone device still reads: %v", err)
	}
	f.Heal()
	if read(t, f, 4096) != 1 {
		t.Fatal("healed device lost data")
	}
	if f.Ops(OpWrite) != 4 || f.Ops(OpFlush) != 1 {
		t.Fatalf("ops: %d writes %d flushes", f.Ops(OpWrite), f.Ops(OpFlush))
	}
}
