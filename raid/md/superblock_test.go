package md

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// span returns the [first, last+1) byte range that accessor touches, by marking it in an empty buffer.
func span(t *testing.T, buf []byte, field []byte) (int, int) {
	t.Helper()
	clear(buf)
	for i := range field {
		field[i] = 0xff
	}
	first, last := bytes.IndexByte(buf, 0xff), bytes.LastIndexByte(buf, 0xff)
	if first < 0 {
		t.Fatal("accessor touched nothing")
	}
	if n := bytes.Count(buf, []byte{0xff}); n != last-first+1 || n != len(field) {
		t.Fatalf("accessor not contiguous: %d bytes marked in [%d,%d]", n, first, last)
	}
	return first, last + 1
}

// TestSuperblockOffsets pins every field of struct mdp_superblock_1 (include/uapi/linux/raid/md_p.h).
func TestSuperblockOffsets(t *testing.T) {
	var r rawSuperblock
	for _, f := range []struct {
		name      string
		off, size int
		acc       func() []byte
	}{
		{"magic", 0x000, 4, r.magic},
		{"major_version", 0x004, 4, r.majorVersion},
		{"feature_map", 0x008, 4, r.featureMap},
		{"pad0", 0x00c, 4, r.pad0},
		{"set_uuid", 0x010, 16, r.setUUID},
		{"set_name", 0x020, 32, r.setName},
		{"ctime", 0x040, 8, r.ctime},
		{"level", 0x048, 4, r.level},
		{"layout", 0x04c, 4, r.layout},
		{"size", 0x050, 8, r.size},
		{"chunksize", 0x058, 4, r.chunksize},
		{"raid_disks", 0x05c, 4, r.raidDisks},
		{"bitmap_offset", 0x060, 4, r.bitmapOffset},
		{"new_level", 0x064, 4, r.newLevel},
		{"reshape_position", 0x068, 8, r.reshapePosition},
		{"delta_disks", 0x070, 4, r.deltaDisks},
		{"new_layout", 0x074, 4, r.newLayout},
		{"new_chunk", 0x078, 4, r.newChunk},
		{"new_offset", 0x07c, 4, r.newOffset},
		{"data_offset", 0x080, 8, r.dataOffset},
		{"data_size", 0x088, 8, r.dataSize},
		{"super_offset", 0x090, 8, r.superOffset},
		{"recovery_offset", 0x098, 8, r.recoveryOffset},
		{"dev_number", 0x0a0, 4, r.devNumber},
		{"cnt_corrected_read", 0x0a4, 4, r.cntCorrectedRead},
		{"device_uuid", 0x0a8, 16, r.deviceUUID},
		{"devflags", 0x0b8, 1, r.devflags},
		{"bblog_shift", 0x0b9, 1, r.bblogShift},
		{"bblog_size", 0x0ba, 2, r.bblogSize},
		{"bblog_offset", 0x0bc, 4, r.bblogOffset},
		{"utime", 0x0c0, 8, r.utime},
		{"events", 0x0c8, 8, r.events},
		{"resync_offset", 0x0d0, 8, r.resyncOffset},
		{"sb_csum", 0x0d8, 4, r.sbCsum},
		{"max_dev", 0x0dc, 4, r.maxDev},
		{"pad3", 0x0e0, 32, r.pad3},
		{"dev_roles[3]", 0x100, 6, func() []byte { return r.devRoles(3) }},
	} {
		from, to := span(t, r[:], f.acc())
		if from != f.off || to-from != f.size {
			t.Errorf("%s at %#x size %d, want %#x size %d", f.name, from, to-from, f.off, f.size)
		}
	}
}

func TestBitmapOffsets(t *testing.T) {
	var r rawBitmap
	for _, f := range []struct {
		name      string
		off, size int
		acc       func() []byte
	}{
		{"magic", 0, 4, r.magic},
		{"version", 4, 4, r.version},
		{"uuid", 8, 16, r.uuid},
		{"events", 24, 8, r.events},
		{"events_cleared", 32, 8, r.eventsCleared},
		{"sync_size", 40, 8, r.syncSize},
		{"state", 48, 4, r.state},
		{"chunksize", 52, 4, r.chunksize},
		{"daemon_sleep", 56, 4, r.daemonSleep},
		{"write_behind", 60, 4, r.writeBehind},
		{"sectors_reserved", 64, 4, r.sectorsReserved},
		{"nodes", 68, 4, r.nodes},
		{"cluster_name", 72, 64, r.clusterName},
	} {
		from, to := span(t, r[:], f.acc())
		if from != f.off || to-from != f.size {
			t.Errorf("%s at %d size %d, want %d size %d", f.name, from, to-from, f.off, f.size)
		}
	}
}

func sample() *Superblock {
	s := &Superblock{
		FeatureMap:   FeatureBitmapOffset,
		SetName:      "gw1:data",
		CTime:        MakeTime(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)),
		Level:        LevelRAID6,
		Layout:       LayoutLeftSymmetric,
		Size:         1 << 20,
		ChunkSize:    1024,
		RaidDisks:    5,
		BitmapOffset: 8,
		DataOffset:   2048,
		DataSize:     1<<20 + 100,
		SuperOffset:  SuperOffsetV12,
		DevNumber:    3,
		UTime:        MakeTime(time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)),
		Events:       42,
		ResyncOffset: ResyncClean,
		DevRoles:     make([]uint16, DefaultMaxDev),
	}
	for i := range s.DevRoles {
		s.DevRoles[i] = RoleSpare
	}
	for i := range 5 {
		s.DevRoles[i] = uint16(i)
	}
	copy(s.SetUUID[:], "0123456789abcdef")
	copy(s.DeviceUUID[:], "fedcba9876543210")
	return s
}

// refChecksum is calc_sb_1_csum spelled out differently: zero sb_csum in a copy, add every u32.
func refChecksum(b []byte) uint32 {
	n := 256 + 2*int(binary.LittleEndian.Uint32(b[0xdc:]))
	c := bytes.Clone(b[:n])
	binary.LittleEndian.PutUint32(c[0xd8:], 0)
	var sum uint64
	for len(c) >= 4 {
		sum += uint64(binary.LittleEndian.Uint32(c))
		c = c[4:]
	}
	if len(c) == 2 {
		sum += uint64(binary.LittleEndian.Uint16(c))
	}
	return uint32(sum) + uint32(sum>>32)
}

func TestEncodeDecode(t *testing.T) {
	for _, maxDev := range []int{0, 1, 2, 5, 128, 384, MaxDevs} {
		for _, bs := range []int{512, 4096} {
			s := sample()
			s.DevRoles = s.DevRoles[:0]
			for i := range maxDev {
				s.DevRoles = append(s.DevRoles, uint16(i))
			}
			s.DevNumber = 0
			b, err := Encode(s, bs)
			if err != nil {
				t.Fatal(err)
			}
			if len(b)%bs != 0 || len(b) < 256+2*maxDev {
				t.Fatalf("max_dev %d bs %d: encoded %d bytes", maxDev, bs, len(b))
			}
			if got, want := binary.LittleEndian.Uint32(b[0xd8:]), refChecksum(b); got != want {
				t.Fatalf("max_dev %d: sb_csum %#x, reference %#x", maxDev, got, want)
			}
			d, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(s, d) {
				t.Fatalf("max_dev %d: round trip\n got %+v\nwant %+v", maxDev, d, s)
			}
		}
	}
}

func equal(a, b *Superblock) bool {
	ac, bc := *a, *b
	ac.DevRoles, bc.DevRoles = nil, nil
	return slices.Equal(a.DevRoles, b.DevRoles) && reflect.DeepEqual(ac, bc)
}

// TestChecksumKnown pins the checksum of a hand-made superblock whose sum is easy to do by hand: magic
// 0xa92b4efc + major 1 + max_dev 0 = 0xa92b4efd; then one more word of 0xffffffff pushes a carry into the
// high half, which the fold adds back.
func TestChecksumKnown(t *testing.T) {
	b := make([]byte, 256)
	binary.LittleEndian.PutUint32(b[0:], SuperblockMagic)
	binary.LittleEndian.PutUint32(b[4:], 1)
	if got := Checksum(b); got != 0xa92b4efd {
		t.Fatalf("got %#x want 0xa92b4efd", got)
	}
	binary.LittleEndian.PutUint32(b[0xd8:], 0x12345678) // ignored: sb_csum counts as zero
	binary.LittleEndian.PutUint32(b[0x10:], 0xffffffff)
	// 0xa92b4efd + 0xffffffff = 0x1_a92b4efc -> 0xa92b4efc + 1
	if got := Checksum(b); got != 0xa92b4efd {
		t.Fatalf("with carry: got %#x want 0xa92b4efd", got)
	}
	// An odd max_dev leaves a trailing u16 that must be counted.
	b = append(b, 0, 0)
	binary.LittleEndian.PutUint32(b[0xdc:], 1)
	binary.LittleEndian.PutUint16(b[0x100:], 0x0102)
	if got, want := Checksum(b), uint32(0xa92b4efd+1+0x0102); got != want {
		t.Fatalf("odd max_dev: got %#x want %#x", got, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	good, err := Encode(sample(), 512)
	if err != nil {
		t.Fatal(err)
	}
	fix := func(b []byte) { binary.LittleEndian.PutUint32(b[0xd8:], Checksum(b)) }
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		field  string
		err    error
		detail string
	}{
		{"short", func(b []byte) []byte { return b[:100] }, "magic", ErrShort, ""},
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }, "magic", ErrMagic, ""},
		{"version", func(b []byte) []byte { b[4] = 0; fix(b); return b }, "major_version", ErrVersion, ""},
		{"max_dev huge", func(b []byte) []byte { b[0xdc], b[0xdd] = 0xff, 0xff; return b }, "max_dev", ErrInvalid, ""},
		{"roles cut", func(b []byte) []byte { return b[:300] }, "dev_roles", ErrShort, ""},
		{"checksum", func(b []byte) []byte { b[0x50]++; return b }, "sb_csum", ErrChecksum, ""},
		{"reshape", func(b []byte) []byte { b[8] |= FeatureReshapeActive; fix(b); return b }, "feature_map", ErrUnsupported, "reshape active"},
		{"journal", func(b []byte) []byte { b[9] |= FeatureJournal >> 8; fix(b); return b }, "feature_map", ErrUnsupported, "journal"},
		{"ppl", func(b []byte) []byte { b[9] |= FeaturePPL >> 8; fix(b); return b }, "feature_map", ErrUnsupported, "PPL"},
		{"clustered", func(b []byte) []byte { b[9] |= FeatureClustered >> 8; fix(b); return b }, "feature_map", ErrUnsupported, "clustered"},
		{"bad blocks", func(b []byte) []byte { b[8] |= FeatureBadBlocks; fix(b); return b }, "feature_map", ErrUnsupported, "bad-block"},
		{"unknown", func(b []byte) []byte { b[11] |= 0x80; fix(b); return b }, "feature_map", ErrUnsupported, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.mutate(bytes.Clone(good)))
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, tc.err) || fe.Field != tc.field {
				t.Fatalf("got %v, want %v on %s", err, tc.err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.detail) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not say %q", err, tc.detail)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if err := sample().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		f     func(s *Superblock)
		field string
		err   error
	}{
		{"linear", func(s *Superblock) { s.Level = LevelLinear }, "level", ErrUnsupported},
		{"raid4", func(s *Superblock) { s.Level = LevelRAID4 }, "level", ErrUnsupported},
		{"left-asymmetric", func(s *Superblock) { s.Layout = 0 }, "layout", ErrUnsupported},
		{"raid10 far", func(s *Superblock) { s.Level, s.Layout = LevelRAID10, 0x201 }, "layout", ErrUnsupported},
		{"raid6 of 3", func(s *Superblock) { s.RaidDisks = 3 }, "raid_disks", ErrInvalid},
		{"chunk not pow2", func(s *Superblock) { s.ChunkSize = 24 }, "chunksize", ErrInvalid},
		{"v1.1", func(s *Superblock) { s.SuperOffset = 0 }, "super_offset", ErrUnsupported},
		{"size", func(s *Superblock) { s.Size = s.DataSize + 1 }, "size", ErrInvalid},
		{"bitmap before sb", func(s *Superblock) { s.BitmapOffset = -16 }, "bitmap_offset", ErrUnsupported},
	} {
		s := sample()
		tc.f(s)
		err := s.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, tc.err) || fe.Field != tc.field {
			t.Errorf("%s: got %v, want %v on %s", tc.name, err, tc.err, tc.field)
		}
	}
}

func TestTime(t *testing.T) {
	tm := time.Date(2026, 11, 27, 19, 0, 0, 123456789, time.UTC)
	if MakeTime(tm)>>ctimeSecondsBits != 0 {
		t.Fatalf("%#x: microseconds set; md's readers take the field as plain seconds", uint64(MakeTime(tm)))
	}
	got := MakeTime(tm).Time()
	if !got.Equal(tm.Truncate(time.Second)) {
		t.Fatalf("got %v want %v", got, tm.Truncate(time.Second))
	}
	// Superblocks written by older mdadm versions may carry microseconds: they decode.
	if got := Time(uint64(tm.Unix()) | 123456<<ctimeSecondsBits).Time(); !got.Equal(tm.Truncate(time.Second).Add(123456 * time.Microsecond)) {
		t.Fatalf("with microseconds: got %v", got)
	}
}

func TestBitmapRoundTrip(t *testing.T) {
	bm := &BitmapSuper{Version: BitmapVersion, Events: 7, EventsCleared: 6, SyncSize: 1 << 21, ChunkSize: 64 << 20,
		DaemonSleep: DefaultDaemonSleep, SectorsReserved: 8}
	copy(bm.UUID[:], "0123456789abcdef")
	b, err := EncodeBitmap(bm)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:4]) != "bitm" {
		t.Fatalf("magic bytes %q", b[:4])
	}
	d, err := DecodeBitmap(b)
	if err != nil {
		t.Fatal(err)
	}
	if *d != *bm {
		t.Fatalf("got %+v want %+v", d, bm)
	}
	if bm.Bits() != 16 { // 1 GiB / 64 MiB
		t.Fatalf("bits %d", bm.Bits())
	}
	b[68] = 2 // nodes: clustered
	if _, err := DecodeBitmap(b); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("clustered bitmap: %v", err)
	}
	bits := make([]byte, 2)
	SetBit(bits, 9, true)
	if bits[1] != 2 || !BitSet(bits, 9) || BitSet(bits, 8) {
		t.Fatalf("bit order: %x", bits)
	}
}
