package disktest

import (
	"errors"
	"sync"
	"time"

	"opensan/gateway/block"
)

// Errors a Faulty disk returns.
var (
	ErrInjected = errors.New("disktest: injected I/O error")
	ErrGone     = errors.New("disktest: device disappeared")
)

// Op selects the operations a Fault applies to.
type Op uint8

const (
	OpRead Op = 1 << iota
	OpWrite
	OpFlush
	OpDiscard
	OpAny = OpRead | OpWrite | OpFlush | OpDiscard
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpDiscard:
		return "discard"
	}
	return "any"
}

// Fault describes what to do to matching operations. The zero Fault matches nothing (Op 0).
type Fault struct {
	Op Op
	// From and To bound the byte range: an operation matches if [off, off+len) overlaps [From, To). To 0
	// means to the end of the disk. Flush has no range and matches any bounds.
	From, To int64
	// Skip lets that many matching operations through before the fault fires.
	Skip int
	// Times is how many operations fail or are delayed once it fires; 0 means forever.
	Times int
	// Err is returned by the faulty operations (ErrInjected when nil and Delay is 0). A failed write may
	// have written nothing.
	Err error
	// Delay is slept before the operation; with Err nil the operation then proceeds normally.
	Delay time.Duration
	// Vanish makes the whole device disappear when the fault fires: this and every later operation fail
	// with ErrGone.
	Vanish bool
}

// Faulty wraps a Device and injects faults by operation and offset.
type Faulty struct {
	block.Device
	Name string // reported in errors

	mu     sync.Mutex
	faults []*faultState
	gone   bool
	ops    [4]int // completed-or-failed operations by kind, for tests
}

type faultState struct {
	Fault
	seen, fired int
}

// NewFaulty wraps d. Until a fault is injected it behaves exactly like d.
func NewFaulty(d block.Device, name string) *Faulty { return &Faulty{Device: d, Name: name} }

// Inject adds a fault; faults are checked in the order added.
func (f *Faulty) Inject(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &faultState{Fault: ft})
}

// Vanish makes the device disappear now.
func (f *Faulty) Vanish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gone = true
}

// Heal removes every fault and brings a vanished device back (a replugged disk with the same content).
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults, f.gone = nil, false
}

// Ops returns how many operations of kind op were attempted.
func (f *Faulty) Ops(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for i := range 4 {
		if op&(1<<i) != 0 {
			n += f.ops[i]
		}
	}
	return n
}

// decide returns the error to fail with and the delay to sleep before the operation.
func (f *Faulty) decide(op Op, off, n int64) (error, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range 4 {
		if op == 1<<i {
			f.ops[i]++
		}
	}
	if f.gone {
		return ErrGone, 0
	}
	for _, s := range f.faults {
		if s.Op&op == 0 || (s.Times > 0 && s.fired >= s.Times) {
			continue
		}
		if op != OpFlush {
			to := s.To
			if to == 0 {
				to = f.Device.Size()
			}
			if off+n <= s.From || off >= to || (n == 0 && off == to) {
				continue
			}
		}
		s.seen++
		if s.seen <= s.Skip {
			continue
		}
		s.fired++
		if s.Vanish {
			f.gone = true
			return ErrGone, s.Delay
		}
		err := s.Err
		if err == nil && s.Delay == 0 {
			err = ErrInjected
		}
		return err, s.Delay
	}
	return nil, 0
}

func (f *Faulty) fail(op Op, off, n int64, err error) error {
	return &block.OpError{Op: op.String(), Device: f.Name, Offset: off, Length: n, Err: err}
}

func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	err, d := f.decide(OpRead, off, int64(len(p)))
	time.Sleep(d)
	if err != nil {
		return 0, f.fail(OpRead, off, int64(len(p)), err)
	}
	return f.Device.ReadAt(p, off)
}

func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	err, d := f.decide(OpWrite, off, int64(len(p)))
	time.Sleep(d)
	if err != nil {
		return 0, f.fail(OpWrite, off, int64(len(p)), err)
	}
	return f.Device.WriteAt(p, off)
}

// WriteAtFUA passes FUA through to the wrapped device (block.WriteFUA falls back to write plus flush).
func (f *Faulty) WriteAtFUA(p []byte, off int64) (int, error) {
	err, d := f.decide(OpWrite, off, int64(len(p)))
	time.Sleep(d)
	if err != nil {
		return 0, f.fail(OpWrite, off, int64(len(p)), err)
	}
	return block.WriteFUA(f.Device, p, off)
}

func (f *Faulty) Flush() error {
	err, d := f.decide(OpFlush, 0, 0)
	time.Sleep(d)
	if err != nil {
		return f.fail(OpFlush, 0, 0, err)
	}
	return f.Device.Flush()
}

func (f *Faulty) Discard(off, length int64) error {
	err, d := f.decide(OpDiscard, off, length)
	time.Sleep(d)
	if err != nil {
		return f.fail(OpDiscard, off, length, err)
	}
	return f.Device.Discard(off, length)
}
