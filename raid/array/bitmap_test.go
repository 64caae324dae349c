package array

import (
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/raid/disktest"
	"opensan/raid/md"
)

// diskBits reads the bitmap bits of member d.
func diskBits(t *testing.T, d block.Device) (*md.BitmapSuper, []byte) {
	t.Helper()
	f, err := Examine(d)
	if err != nil {
		t.Fatal(err)
	}
	if f.Bitmap == nil {
		t.Fatal("no bitmap")
	}
	bits := make([]byte, (f.Bitmap.Bits()+7)/8)
	if err := readUnaligned(d, bits, superOffsetBytes+int64(f.Super.BitmapOffset)*md.SectorSize+md.BitmapSuperSize); err != nil {
		t.Fatal(err)
	}
	return f.Bitmap, bits
}

func setBits(bm *md.BitmapSuper, bits []byte) []int {
	var out []int
	for b := range bm.Bits() {
		if md.BitSet(bits, b) {
			out = append(out, int(b))
		}
	}
	return out
}

// TestBitmapIntent: a write sets its region's bit durably before the data goes out; after a crash only
// that region is resynced.
func TestBitmapIntent(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		crash := make([]*disktest.Crashable, 4)
		devs := make([]block.Device, 4)
		for i := range devs {
			crash[i] = disktest.NewCrashable(64<<10+16*testChunk, bs)
			devs[i] = crash[i]
		}
		a, err := Create(devs, CreateConfig{Level: md.LevelRAID5, Chunk: testChunk, Name: "bm", DataOffset: 64 << 10,
			Bitmap: true, BitmapChunk: testChunk, BitmapDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		a.WaitSync()
		if bm, bits := diskBits(t, devs[0]); len(setBits(bm, bits)) != int(bm.Bits()) {
			t.Fatalf("new array: bits %v set, want all %d (initial sync pending)", setBits(bm, bits), bm.Bits())
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if bm, bits := diskBits(t, devs[0]); len(setBits(bm, bits)) != 0 {
			t.Fatalf("clean stop left bits %v", setBits(bm, bits))
		}
		a, err = Assemble(devs, AssembleConfig{BitmapDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		// Array chunk 3*3+1 = 10 is in stripe 3 (3 data members).
		if _, err := a.WriteAt(make([]byte, bs), 10*testChunk); err != nil {
			t.Fatal(err)
		}
		after := make([]block.Device, 4)
		for i, c := range crash {
			after[i] = c.Crash(nil) // lose everything not flushed: the bit must still be there
		}
		for i := range after {
			bm, bits := diskBits(t, after[i])
			if got := setBits(bm, bits); len(got) != 1 || got[0] != 3 {
				t.Fatalf("bs %d member %d: bits %v after the crash, want [3]", bs, i, got)
			}
		}
		b, err := Assemble(after, AssembleConfig{BitmapDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		b.WaitSync()
		if b.Resynced() != 1 {
			t.Fatalf("resynced %d units, want only the dirty one", b.Resynced())
		}
		if bad, err := b.Check(); err != nil || bad != 0 {
			t.Fatalf("check: %d %v", bad, err)
		}
		b.Close()
	}
}

// TestBitmapLazyClear: bits go once their region has been idle for a daemon period, after a flush.
func TestBitmapLazyClear(t *testing.T) {
	crash := make([]*disktest.Crashable, 3)
	devs := make([]block.Device, 3)
	for i := range devs {
		crash[i] = disktest.NewCrashable(64<<10+16*testChunk, 512)
		devs[i] = crash[i]
	}
	a, err := Create(devs, CreateConfig{Level: md.LevelRAID1, Name: "bm", DataOffset: 64 << 10, Bitmap: true,
		BitmapChunk: 64 << 10, BitmapDelay: 5 * time.Millisecond, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.WriteAt(make([]byte, 4096), 3*64<<10); err != nil {
		t.Fatal(err)
	}
	if bm, bits := diskBits(t, devs[1]); len(setBits(bm, bits)) != 1 {
		t.Fatalf("bits %v after one write", setBits(bm, bits))
	}
	flushes := crash[1].Flushes()
	deadline := time.Now().Add(5 * time.Second)
	for {
		bm, bits := diskBits(t, devs[1])
		if len(setBits(bm, bits)) == 0 {
			// The header was read before the bits: read it again, now at least as new as the bits.
			if bm, _ = diskBits(t, devs[1]); bm.EventsCleared == 0 {
				t.Fatal("events_cleared not recorded")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bit never cleared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if crash[1].Flushes() < flushes+2 { // a flush of the data, then the bitmap write's own flush
		t.Fatalf("bit cleared without flushing first (%d -> %d flushes)", flushes, crash[1].Flushes())
	}
}

// TestBitmapPartialLastBit: when the last bit covers less than a whole bitmap chunk, a clean stop still
// clears it (stock mdadm -X counts it otherwise).
func TestBitmapPartialLastBit(t *testing.T) {
	devs := memDevs(3, 64<<10+15*testChunk, 512) // 15 stripes; bits of 2 stripes: 8 bits, the last half used
	a, err := Create(devs, CreateConfig{Level: md.LevelRAID5, Chunk: testChunk, Name: "bm", DataOffset: 64 << 10,
		Bitmap: true, BitmapChunk: 2 * testChunk, BitmapDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a.WaitSync()
	if _, err := a.WriteAt(make([]byte, 512), a.Size()-512); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	bm, bits := diskBits(t, devs[2])
	if bm.Bits() != 8 || len(setBits(bm, bits)) != 0 {
		t.Fatalf("%d bits, set after a clean stop: %v", bm.Bits(), setBits(bm, bits))
	}
}
