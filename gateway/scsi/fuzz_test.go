package scsi

import (
	"context"
	"testing"

	"opensan/gateway/block"
)

// boundedDevice fails the test on any access outside the device, whatever the backend would do.
type boundedDevice struct {
	*block.Memory
	t *testing.T
}

func (d boundedDevice) check(op string, off, n int64) {
	if off < 0 || n < 0 || off+n > d.Size() {
		d.t.Fatalf("%s beyond the device: offset %d length %d size %d", op, off, n, d.Size())
	}
}

func (d boundedDevice) ReadAt(p []byte, off int64) (int, error) {
	d.check("read", off, int64(len(p)))
	return d.Memory.ReadAt(p, off)
}

func (d boundedDevice) WriteAt(p []byte, off int64) (int, error) {
	d.check("write", off, int64(len(p)))
	return d.Memory.WriteAt(p, off)
}

func (d boundedDevice) Discard(off, n int64) error {
	d.check("discard", off, n)
	return d.Memory.Discard(off, n)
}

var validStatus = map[byte]bool{StatusGood: true, StatusCheckCondition: true, StatusConditionMet: true,
	StatusReservationConflict: true}

// FuzzExecute feeds random CDBs and data-out to a small LU: no panic, a valid status, sense data exactly
// when CHECK CONDITION, never an access beyond the device.
func FuzzExecute(f *testing.F) {
	seeds := [][]byte{
		{0x00, 0, 0, 0, 0, 0}, {0x12, 1, 0x83, 0, 0xff, 0}, {0x12, 0, 0, 0, 0xff, 0},
		{0x08, 0, 0, 0, 0, 0}, cdb10(0x28, 0, 0, 8), cdb10(0x2a, 0, 60, 4), cdb16(0x88, 0, 1<<40, 1),
		cdb16(0x93, flagUnmap|flagNDOB, 0, 64), cdb10(0x41, 0, 0, 10), cawCDB(3, 2), cdb16(0x8b, 0, 0, 2),
		cdb10(0x2f, 0x02, 0, 2), cdb12(0xaf, 0x06, 1, 3), {0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0},
		{0x1a, 0, 0x3f, 0xff, 0xff, 0}, {0x5a, 0x10, 0x3f, 0, 0, 0, 0, 1, 0, 0}, {0x15, 0x10, 0, 0, 24, 0},
		{0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0}, {0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
		{0xa3, 0x0c, 0x82, 0x9e, 0, 0x10, 0, 0, 1, 0, 0, 0}, {0xa3, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0},
		{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, {0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0},
		{0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0}, {0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}, {0x1b, 0, 0, 0, 0, 0},
		{0x03, 0, 0, 0, 18, 0}, {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s, []byte{1, 0, 0, 4, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	}
	f.Add([]byte{0x2a, 0, 0, 0, 0, 60, 0, 0, 8, 0}, make([]byte, 4096))
	xl := xcopyList(1, 0, [][8]byte{naaDesignator("x")}, [][5]uint64{{0, 0, 2, 0, 8}})
	f.Add(xcopyCDB(len(xl)), xl)
	pc, pp := prout(proutRegisterIgnore, 0, 0, 0x1234)
	f.Add(pc, pp)
	f.Add([]byte{0x84, rcrOpParams, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, []byte(nil))
	f.Add([]byte{0x5e, prinReadFullStatus, 0, 0, 0, 0, 0, 1, 0, 0}, []byte(nil))
	f.Fuzz(func(t *testing.T, cdb, out []byte) {
		tg := NewTarget("iqn.fuzz")
		mem := block.NewMemory(64*512, 512)
		if err := tg.AddLU(0, LUConfig{Device: boundedDevice{mem, t}}); err != nil {
			t.Fatal(err)
		}
		n := &Nexus{InitiatorPort: "fuzz"}
		tg.Execute(context.Background(), &Command{Nexus: n, CDB: []byte{0, 0, 0, 0, 0, 0}})
		r := tg.Execute(context.Background(), &Command{Nexus: n, Tag: 1, CDB: cdb, DataOut: out, DataInLength: 1 << 20})
		if r.Aborted {
			t.Fatal("aborted without an abort")
		}
		if !validStatus[r.Status] {
			t.Fatalf("status %#x", r.Status)
		}
		if (r.Status == StatusCheckCondition) != (len(r.Sense) == senseFixedLen) {
			t.Fatalf("status %#x with %d bytes of sense", r.Status, len(r.Sense))
		}
		if r.DataOutWanted < 0 {
			t.Fatalf("DataOutWanted %d", r.DataOutWanted)
		}
		r.Release()
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDecodeBlockCDB checks the pure decoders never panic and stay consistent with CDBLength.
func FuzzDecodeBlockCDB(f *testing.F) {
	for _, s := range [][]byte{{0x08, 0x1f, 0xff, 0xff, 0, 0}, cdb10(0x28, 0, 1, 1), cdb12(0xa8, 0, 1, 1),
		cdb16(0x88, 0, 1, 1), cawCDB(1, 1), {0x7f}, {}, {0x9e, 0x10}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cdb []byte) {
		b, ok := DecodeBlockCDB(cdb)
		if ok {
			n := CDBLength(cdb[0])
			if n == 0 || len(cdb) < n || b.LBAField >= n || b.LengthField >= n {
				t.Fatalf("decoded %x: %+v", cdb, b)
			}
			if n == 6 && (b.Blocks == 0 || b.Blocks > 256 || b.LBA >= 1<<21) {
				t.Fatalf("6-byte decode %+v", b)
			}
		}
		DecodeCompareAndWrite(cdb)
		AllocationLength(cdb)
		ServiceAction(cdb)
		lookupOp(append(cdb, 0))
		if len(cdb) >= 8 {
			DecodeLUN(cdb)
		}
	})
}

func FuzzSenseDecode(f *testing.F) {
	f.Add(invalidCDB(3, 2).bytes())
	f.Add(miscompare(77).bytes())
	f.Add([]byte{0x70})
	f.Fuzz(func(t *testing.T, s []byte) {
		SenseKey(s)
		SenseASC(s)
		SenseFieldPointer(s)
		SenseInformation(s)
	})
}
