package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"
)

func TestWriteSame(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	expectGood(t, run(tg, cdb10(0x41, 0, 10, 5), fill(512, 0xab)))
	r := run(tg, cdb10(0x28, 0, 9, 7), nil)
	if !bytes.Equal(r.DataIn[512:6*512], fill(5*512, 0xab)) || !allZero(r.DataIn[:512]) || !allZero(r.DataIn[6*512:]) {
		t.Fatal("WRITE SAME(10) wrote the wrong blocks")
	}
	// UNMAP bit with zero data deallocates; reads zeros (LBPRZ).
	expectGood(t, run(tg, cdb16(0x93, flagUnmap, 10, 5), make([]byte, 512)))
	r = run(tg, cdb10(0x28, 0, 10, 5), nil)
	if !allZero(r.DataIn) {
		t.Fatal("unmapped blocks do not read zeros")
	}
	// NDOB: no data-out, zeros.
	expectGood(t, run(tg, cdb16(0x93, 0, 0, 1), fill(512, 1)))
	r = run(tg, cdb16(0x93, flagNDOB, 0, 1), nil)
	expectGood(t, r)
	if r.DataOutWanted != 0 {
		t.Fatalf("NDOB DataOutWanted %d", r.DataOutWanted)
	}
	if r = run(tg, cdb10(0x28, 0, 0, 1), nil); !allZero(r.DataIn) {
		t.Fatal("NDOB did not write zeros")
	}
	// Zero blocks with WSNZ, beyond the end, wrong data-out sizes, ANCHOR.
	expectField(t, run(tg, cdb10(0x41, 0, 0, 0), fill(512, 1)), true, 7, -1)
	expectSense(t, run(tg, cdb10(0x41, 0, 1020, 5), fill(512, 1)), SenseIllegalRequest, ASCLBAOutOfRange)
	expectSense(t, run(tg, cdb10(0x41, 0, 0, 1), fill(256, 1)), SenseIllegalRequest, ASCInvalidFieldInCmdIU)
	expectSense(t, run(tg, cdb10(0x41, 0, 0, 1), fill(1024, 1)), SenseIllegalRequest, ASCInvalidFieldInCmdIU)
	expectField(t, run(tg, cdb10(0x41, flagAnchor, 0, 1), fill(512, 1)), true, 1, 4)
}

func unmapList(descs ...[2]uint64) []byte {
	p := make([]byte, 8+16*len(descs))
	binary.BigEndian.PutUint16(p, uint16(len(p)-2))
	binary.BigEndian.PutUint16(p[2:], uint16(16*len(descs)))
	for i, d := range descs {
		binary.BigEndian.PutUint64(p[8+16*i:], d[0])
		binary.BigEndian.PutUint32(p[16+16*i:], uint32(d[1]))
	}
	return p
}

func TestUnmap(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 8), fill(8*512, 0xee)))
	p := unmapList([2]uint64{1, 2}, [2]uint64{5, 1})
	c := make([]byte, 10)
	c[0] = 0x42
	binary.BigEndian.PutUint16(c[7:], uint16(len(p)))
	expectGood(t, run(tg, c, p))
	r := run(tg, cdb10(0x28, 0, 0, 8), nil)
	for blk, want := range []bool{false, true, true, false, false, true, false, false} {
		if allZero(r.DataIn[blk*512:(blk+1)*512]) != want {
			t.Fatalf("block %d zero=%v after UNMAP", blk, !want)
		}
	}
	// A bad descriptor anywhere stops the whole command before any unmapping.
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), fill(512, 0xee)))
	p = unmapList([2]uint64{0, 1}, [2]uint64{1023, 2})
	binary.BigEndian.PutUint16(c[7:], uint16(len(p)))
	expectSense(t, run(tg, c, p), SenseIllegalRequest, ASCLBAOutOfRange)
	if r = run(tg, cdb10(0x28, 0, 0, 1), nil); allZero(r.DataIn) {
		t.Fatal("failed UNMAP unmapped block 0")
	}
	// Parameter list shorter than the header.
	binary.BigEndian.PutUint16(c[7:], 4)
	expectSense(t, run(tg, c, make([]byte, 4)), SenseIllegalRequest, ASCParameterListLengthError)
	// Zero blocks at the capacity, and an empty list, are fine.
	p = unmapList([2]uint64{1024, 0})
	binary.BigEndian.PutUint16(c[7:], uint16(len(p)))
	expectGood(t, run(tg, c, p))
	binary.BigEndian.PutUint16(c[7:], 0)
	expectGood(t, run(tg, c, nil))
	// Too many blocks in one descriptor.
	big, _ := newTestTarget(t, 4<<20)
	p = unmapList([2]uint64{0, maxUnmapBlocks + 1})
	binary.BigEndian.PutUint16(c[7:], uint16(len(p)))
	expectField(t, run(big, c, p), false, 16, -1)
}

func TestVerify(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	data := fill(4*512, 0x5a)
	expectGood(t, run(tg, cdb10(0x2a, 0, 100, 4), data))
	expectGood(t, run(tg, cdb10(0x2f, 0, 100, 4), nil))           // BYTCHK 0: medium check
	expectGood(t, run(tg, cdb10(0x2f, 0x02, 100, 4), data))       // BYTCHK 1
	expectGood(t, run(tg, cdb16(0x8f, 0x06, 100, 4), data[:512])) // BYTCHK 3: one block for all
	bad := bytes.Clone(data)
	bad[1000] ^= 0xff
	r := run(tg, cdb12(0xaf, 0x02, 100, 4), bad)
	expectSense(t, r, SenseMiscompare, ASCMiscompareDuringVerify)
	if info, ok := SenseInformation(r.Sense); !ok || info != 1000 {
		t.Fatalf("MISCOMPARE INFORMATION %d valid=%v, want 1000", info, ok)
	}
	expectField(t, run(tg, cdb10(0x2f, 0x04, 100, 4), data), true, 1, 2) // BYTCHK 10b reserved
	expectSense(t, run(tg, cdb10(0x2f, 0, 1023, 4), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	// WRITE AND VERIFY writes.
	expectGood(t, run(tg, cdb10(0x2e, 0x02, 200, 1), fill(512, 3)))
	if r = run(tg, cdb10(0x28, 0, 200, 1), nil); !bytes.Equal(r.DataIn, fill(512, 3)) {
		t.Fatal("WRITE AND VERIFY did not write")
	}
}

func cawCDB(lba uint64, n byte) []byte {
	c := make([]byte, 16)
	c[0] = 0x89
	binary.BigEndian.PutUint64(c[2:], lba)
	c[13] = n
	return c
}

func TestCompareAndWrite(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	old, nw := fill(1024, 'A'), fill(1024, 'B')
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 2), old))
	expectGood(t, run(tg, cawCDB(0, 2), append(bytes.Clone(old), nw...)))
	if r := run(tg, cdb10(0x28, 0, 0, 2), nil); !bytes.Equal(r.DataIn, nw) {
		t.Fatal("COMPARE AND WRITE did not write")
	}
	wrong := bytes.Clone(nw)
	wrong[700] = 'x'
	r := run(tg, cawCDB(0, 2), append(wrong, old...))
	expectSense(t, r, SenseMiscompare, ASCMiscompareDuringVerify)
	if info, _ := SenseInformation(r.Sense); info != 700 {
		t.Fatalf("INFORMATION %d, want 700", info)
	}
	if r := run(tg, cdb10(0x28, 0, 0, 2), nil); !bytes.Equal(r.DataIn, nw) {
		t.Fatal("a miscompare wrote")
	}
	expectField(t, run(tg, cawCDB(0, 1), fill(1536, 0)), true, 13, -1)
	expectField(t, run(tg, cawCDB(0, 0), fill(1024, 0)), true, 13, -1) // 256 blocks encoded as 0
	expectSense(t, run(tg, cawCDB(1023, 2), fill(2048, 0)), SenseIllegalRequest, ASCLBAOutOfRange)
	expectGood(t, run(tg, cawCDB(0, 0), nil))
}

// TestCompareAndWriteAtomic runs COMPARE AND WRITE increments of a counter block from many goroutines while
// plain WRITEs hammer the same region: every successful CAW must have seen the value the previous one wrote,
// so the number of successes equals the final counter.
func TestCompareAndWriteAtomic(t *testing.T) {
	tg, _ := newTestTarget(t, 4096)
	block := func(v uint64) []byte { b := make([]byte, 512); binary.BigEndian.PutUint64(b, v); return b }
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), block(0)))
	var wg sync.WaitGroup
	var mu sync.Mutex
	successes := 0
	stop := make(chan struct{})
	// Writers of the neighbouring blocks in the same lock region.
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				run(tg, cdb10(0x2a, 0, 1, 8), fill(8*512, 9))
			}
		}()
	}
	var cw sync.WaitGroup
	for g := 0; g < 4; g++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for i := 0; i < 200; i++ {
				r := run(tg, cdb10(0x28, 0, 0, 1), nil)
				v := binary.BigEndian.Uint64(r.DataIn)
				r.Release()
				if run(tg, cawCDB(0, 1), append(block(v), block(v+1)...)).Status == StatusGood {
					mu.Lock()
					successes++
					mu.Unlock()
				}
			}
		}()
	}
	cw.Wait()
	close(stop)
	wg.Wait()
	r := run(tg, cdb10(0x28, 0, 0, 1), nil)
	if got := binary.BigEndian.Uint64(r.DataIn); got != uint64(successes) || successes == 0 {
		t.Fatalf("counter %d after %d successful COMPARE AND WRITEs", got, successes)
	}
}

func TestOrWrite(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), fill(512, 0x0f)))
	expectGood(t, run(tg, cdb16(0x8b, 0, 0, 1), fill(512, 0xf0)))
	if r := run(tg, cdb10(0x28, 0, 0, 1), nil); !bytes.Equal(r.DataIn, fill(512, 0xff)) {
		t.Fatal("ORWRITE")
	}
	expectGood(t, run(tg, cdb16(0x8b, 0, 0, 0), nil))
	expectSense(t, run(tg, cdb16(0x8b, 0, 1024, 1), fill(512, 0)), SenseIllegalRequest, ASCLBAOutOfRange)
}

func TestPrefetchStartStopSanitize(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	if r := run(tg, cdb10(0x34, 0, 0, 10), nil); r.Status != StatusConditionMet {
		t.Fatalf("PRE-FETCH status %#x", r.Status)
	}
	expectSense(t, run(tg, cdb16(0x90, 0, 1024, 1), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	// Stop: medium access is NOT READY until started again.
	expectGood(t, run(tg, []byte{0x1b, 0, 0, 0, 0, 0}, nil))
	expectSense(t, run(tg, cdb10(0x28, 0, 0, 1), nil), SenseNotReady, 0x0402)
	expectGood(t, run(tg, []byte{0x1b, 0, 0, 0, 1, 0}, nil))
	expectGood(t, run(tg, cdb10(0x28, 0, 0, 1), nil))
	// SANITIZE OVERWRITE with a 4-byte pattern, then BLOCK ERASE.
	c := []byte{0x48, sanitizeOverwrite, 0, 0, 0, 0, 0, 0, 8, 0}
	expectGood(t, run(tg, c, []byte{0x01, 0, 0, 4, 1, 2, 3, 4}))
	r := run(tg, cdb10(0x28, 0, 1023, 1), nil)
	if !bytes.Equal(r.DataIn[:8], []byte{1, 2, 3, 4, 1, 2, 3, 4}) {
		t.Fatalf("SANITIZE OVERWRITE left %x", r.DataIn[:8])
	}
	expectField(t, run(tg, c, []byte{0x00, 0, 0, 4, 1, 2, 3, 4}), false, 0, 3) // OWCOUNT 0
	expectGood(t, run(tg, []byte{0x48, sanitizeBlockErase, 0, 0, 0, 0, 0, 0, 0, 0}, nil))
	if r = run(tg, cdb10(0x28, 0, 1023, 1), nil); !allZero(r.DataIn) {
		t.Fatal("SANITIZE BLOCK ERASE left data")
	}
	expectField(t, run(tg, []byte{0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0}, nil), true, 1, 4) // CRYPTO ERASE
}

func TestReadOnly(t *testing.T) {
	tg := NewTarget("iqn.x")
	if err := tg.AddLU(0, LUConfig{Device: newMem(64), ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	run(tg, []byte{0, 0, 0, 0, 0, 0}, nil)
	for _, c := range [][]byte{cdb10(0x2a, 0, 0, 1), cdb16(0x93, flagNDOB|flagUnmap, 0, 1), cawCDB(0, 1),
		cdb10(0x2e, 0, 0, 1), cdb16(0x8b, 0, 0, 1), {0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}} {
		expectSense(t, run(tg, c, nil), SenseDataProtect, ASCWriteProtected)
	}
	r := run(tg, []byte{0x1a, 0, 0x3f, 0, 0xff, 0}, nil)
	if r.DataIn[2]&devSpecWP == 0 {
		t.Fatal("WP not set in the mode parameter header")
	}
	expectGood(t, run(tg, cdb10(0x28, 0, 0, 1), nil))
}

func TestModeSelect(t *testing.T) {
	tg, mem := newTestTarget(t, 1024)
	_ = mem
	other := &Nexus{InitiatorPort: "other"}
	tg.Execute(context.Background(), &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}})
	// Read the caching page with DBD and send it back with WCE cleared.
	r := run(tg, []byte{0x1a, 0x08, pageCaching, 0, 0xff, 0}, nil)
	expectGood(t, r)
	p := bytes.Clone(r.DataIn)
	p[0] = 0
	p[4+2] &^= cachingWCE
	c := []byte{0x15, 0x10, 0, 0, byte(len(p)), 0}
	expectGood(t, run(tg, c, p))
	r = run(tg, []byte{0x1a, 0x08, pageCaching, 0, 0xff, 0}, nil)
	if r.DataIn[6]&cachingWCE != 0 {
		t.Fatal("WCE still set")
	}
	expectSense(t, tg.Execute(context.Background(), &Command{Nexus: other, CDB: []byte{0, 0, 0, 0, 0, 0}}),
		SenseUnitAttention, ASCModeParametersChanged)
	// Writes still work (now FUA).
	expectGood(t, run(tg, cdb10(0x2a, 0, 0, 1), fill(512, 1)))
	// Changing a non-changeable bit: RCD (byte 2 bit 0) of the caching page.
	p[4+2] |= 0x01
	expectField(t, run(tg, c, p), false, 4+2, 0)
	p[4+2] &^= 0x01
	// Wrong page length, PF=0, SP=1, short list.
	p[4+1]++
	expectField(t, run(tg, c, p), false, 5, -1)
	p[4+1]--
	expectField(t, run(tg, []byte{0x15, 0, 0, 0, byte(len(p)), 0}, p), true, 1, 4)
	expectField(t, run(tg, []byte{0x15, 0x11, 0, 0, byte(len(p)), 0}, p), true, 1, 0)
	expectSense(t, run(tg, []byte{0x15, 0x10, 0, 0, 2, 0}, p[:2]), SenseIllegalRequest, ASCParameterListLengthError)
	// MODE SENSE(10) with LLBAA: long block descriptor.
	r = run(tg, []byte{0x5a, 0x10, 0x3f, 0, 0, 0, 0, 0x10, 0, 0}, nil)
	expectGood(t, r)
	if r.DataIn[4]&1 == 0 || binary.BigEndian.Uint16(r.DataIn[6:]) != 16 || binary.BigEndian.Uint64(r.DataIn[8:]) != 1024 {
		t.Fatalf("MODE SENSE(10) LLBAA %x", r.DataIn[:24])
	}
}

func TestReportSupportedOpcodes(t *testing.T) {
	tg, _ := newTestTarget(t, 64)
	c := []byte{0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x40, 0, 0, 0}
	r := run(tg, c, nil)
	expectGood(t, r)
	d := r.DataIn
	if int(binary.BigEndian.Uint32(d))+4 != len(d) || len(d) != 4+len(opList)*20 {
		t.Fatalf("RSOC all with RCTD: %d bytes for %d commands", len(d), len(opList))
	}
	for i, o := range opList {
		desc := d[4+20*i:]
		if desc[0] != o.op || (desc[5]&1 != 0) != o.hasSA || int(binary.BigEndian.Uint16(desc[6:])) != len(o.usage) {
			t.Fatalf("descriptor %d %x for %s", i, desc[:8], o.name)
		}
		// One command: usage data equals the table, and validation of a CDB follows it.
		opt := byte(rsocOpcode)
		if o.hasSA {
			opt = rsocOpcodeSA
		}
		one := []byte{0xa3, 0x0c, opt, o.op, byte(o.sa >> 8), byte(o.sa), 0, 0, 1, 0, 0, 0}
		r1 := run(tg, one, nil)
		expectGood(t, r1)
		if r1.DataIn[1]&7 != 3 || !bytes.Equal(r1.DataIn[4:], o.usage) {
			t.Fatalf("%s: one-command data %x", o.name, r1.DataIn)
		}
		// The other option is refused for it.
		one[2] = rsocOpcode + rsocOpcodeSA - opt
		expectField(t, run(tg, one, nil), true, 2, 2)
	}
	// Unsupported opcode: SUPPORT 001b.
	r = run(tg, []byte{0xa3, 0x0c, 1, 0xff, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	expectGood(t, r)
	if r.DataIn[1]&7 != 1 {
		t.Fatalf("unsupported opcode SUPPORT %d", r.DataIn[1]&7)
	}
	r = run(tg, []byte{0xa3, 0x0d, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0}, nil)
	expectGood(t, r)
	if r.DataIn[0] != 0xda {
		t.Fatalf("REPORT SUPPORTED TMFs %x", r.DataIn)
	}
}

// blockingDevice stalls reads until released, to test task management against running commands.
type blockingDevice struct {
	*memDev
	entered chan struct{}
	release chan struct{}
}

func (d *blockingDevice) ReadAt(p []byte, off int64) (int, error) {
	d.entered <- struct{}{}
	<-d.release
	return d.memDev.ReadAt(p, off)
}

func TestAbortAndLUNReset(t *testing.T) {
	dev := &blockingDevice{memDev: &memDev{newMem(64)}, entered: make(chan struct{}, 16), release: make(chan struct{})}
	tg := NewTarget("iqn.x")
	if err := tg.AddLU(0, LUConfig{Device: dev}); err != nil {
		t.Fatal(err)
	}
	run(tg, []byte{0, 0, 0, 0, 0, 0}, nil)
	results := make(chan Result, 4)
	for tag := uint64(1); tag <= 3; tag++ {
		go func() {
			results <- tg.Execute(context.Background(), &Command{Nexus: testNexus, Tag: tag, CDB: cdb10(0x28, 0, 0, 1)})
		}()
	}
	for i := 0; i < 3; i++ {
		<-dev.entered
	}
	// ABORT TASK of a tag that does not exist, then of tag 2 (waits until it stopped).
	if tg.AbortTask(testNexus, 0, 99) != TMFNoSuchTask {
		t.Fatal("AbortTask of a missing tag")
	}
	done := make(chan TMFResponse)
	go func() { done <- tg.AbortTask(testNexus, 0, 2) }()
	select {
	case <-done:
		t.Fatal("AbortTask returned while the task was still running")
	case <-time.After(50 * time.Millisecond):
	}
	dev.release <- struct{}{}
	// One read was released; it may be tag 2 or another. Release the rest through a LUN reset.
	go func() {
		for {
			select {
			case dev.release <- struct{}{}:
			case <-time.After(2 * time.Second):
				return
			}
		}
	}()
	if got := <-done; got != TMFComplete {
		t.Fatalf("AbortTask: %d", got)
	}
	tg.LUNReset(testNexus, 0)
	aborted := 0
	for i := 0; i < 3; i++ {
		if r := <-results; r.Aborted {
			aborted++
		}
	}
	if aborted < 1 {
		t.Fatal("no task reported aborted")
	}
}

// TestLUNResetWhileRunning hammers the LU with reads and writes while resets fly: nothing deadlocks and
// the race detector stays quiet.
func TestLUNResetWhileRunning(t *testing.T) {
	tg, _ := newTestTarget(t, 4096)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := &Nexus{InitiatorPort: "p" + string(rune('a'+g))}
			for tag := uint64(0); ctx.Err() == nil; tag++ {
				var r Result
				if tag%2 == 0 {
					r = tg.Execute(ctx, &Command{Nexus: n, Tag: tag, CDB: cdb10(0x2a, 0, uint32(tag%4000), 8), DataOut: fill(4096, byte(tag))})
				} else {
					r = tg.Execute(ctx, &Command{Nexus: n, Tag: tag, CDB: cdb10(0x28, 0, uint32(tag%4000), 8)})
				}
				r.Release()
			}
		}()
	}
	for ctx.Err() == nil {
		tg.LUNReset(testNexus, 0)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
}

// gatedDevice holds every write until gate is closed.
type gatedDevice struct {
	*memDev
	gate chan struct{}
}

func (d *gatedDevice) WriteAt(p []byte, off int64) (int, error) {
	<-d.gate
	return d.memDev.WriteAt(p, off)
}

// TestSanitizeInProgress checks that a running SANITIZE makes other commands NOT READY, survives ABORT
// TASK and LUN RESET, and leaves the medium deallocated after a BLOCK ERASE.
func TestSanitizeInProgress(t *testing.T) {
	dev := &gatedDevice{memDev: &memDev{newMem(64)}, gate: make(chan struct{})}
	tg := NewTarget("iqn.x")
	if err := tg.AddLU(0, LUConfig{Device: dev}); err != nil {
		t.Fatal(err)
	}
	run(tg, []byte{0, 0, 0, 0, 0, 0}, nil)
	res := make(chan Result)
	go func() {
		res <- tg.Execute(context.Background(), &Command{Nexus: testNexus, Tag: 777,
			CDB: []byte{0x48, sanitizeOverwrite, 0, 0, 0, 0, 0, 0, 8, 0}, DataOut: []byte{1, 0, 0, 4, 9, 9, 9, 9}})
	}()
	for !tg.lookup(0).sanitizing.Load() {
		time.Sleep(time.Millisecond)
	}
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseNotReady, ascSanitizeInProgress)
	expectGood(t, run(tg, []byte{0x12, 0, 0, 0, 36, 0}, nil))
	r := run(tg, []byte{0x03, 0, 0, 0, 18, 0}, nil)
	if SenseASC(r.DataIn) != ascSanitizeInProgress {
		t.Fatalf("REQUEST SENSE during SANITIZE: %x", r.DataIn)
	}
	if tg.AbortTask(testNexus, 0, 777) != TMFComplete {
		t.Fatal("ABORT TASK of the SANITIZE")
	}
	if r := <-res; !r.Aborted {
		t.Fatal("aborted SANITIZE command not reported aborted")
	}
	tg.LUNReset(testNexus, 0)
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseUnitAttention, ASCBusDeviceResetOccurred)
	expectSense(t, run(tg, []byte{0, 0, 0, 0, 0, 0}, nil), SenseNotReady, ascSanitizeInProgress)
	close(dev.gate)
	for tg.lookup(0).sanitizing.Load() {
		time.Sleep(time.Millisecond)
	}
	r = run(tg, cdb10(0x28, 0, 63, 1), nil)
	expectGood(t, r)
	if r.DataIn[0] != 9 {
		t.Fatal("the SANITIZE did not finish its overwrite after the abort")
	}
	// BLOCK ERASE: GET LBA STATUS says deallocated until something is written.
	expectGood(t, run(tg, []byte{0x48, sanitizeBlockErase, 0, 0, 0, 0, 0, 0, 0, 0}, nil))
	gls := []byte{0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0}
	if r = run(tg, gls, nil); r.DataIn[20] != 1 {
		t.Fatalf("GET LBA STATUS after BLOCK ERASE: %x", r.DataIn)
	}
	expectGood(t, run(tg, cdb10(0x2a, 0, 5, 1), fill(512, 1)))
	if r = run(tg, gls, nil); r.DataIn[20] != 0 {
		t.Fatalf("GET LBA STATUS after a write: %x", r.DataIn)
	}
	r = run(tg, []byte{0x12, 1, 0xb1, 0, 64, 0}, nil)
	if r.DataIn[7]>>6 != 1 {
		t.Fatalf("WABEREQ %d", r.DataIn[7]>>6)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
}
