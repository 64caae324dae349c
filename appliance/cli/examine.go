package cli

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"time"

	"opensan/gateway/block"
	"opensan/raid/array"
	"opensan/raid/md"
)

const examineUsage = `usage: gatewayd array examine MEMBER...

Prints the md v1.2 superblock of each MEMBER the way mdadm --examine does, same labels and order, with the
write-intent bitmap's superblock (what mdadm -X shows) when there is one. Members are opened read-only.
Exit status 1 when a MEMBER has no md superblock or an unusable one; the others are printed all the same.
`

func runArrayExamine(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("array examine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, examineUsage) }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("give at least one member")
	}
	failed := 0
	for _, p := range fs.Args() {
		r, err := readExamine(p)
		if err != nil {
			fmt.Fprintf(stderr, "gatewayd array examine: %s: %v\n", p, err)
			failed++
			continue
		}
		r.host = hostName()
		r.write(stdout)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d members without a usable md superblock", failed, fs.NArg())
	}
	return nil
}

// examined is what examine prints about one member.
type examined struct {
	path     string
	super    *md.Superblock
	bitmap   *md.BitmapSuper // nil without an internal bitmap
	checksum uint32          // sb_csum as stored
	computed uint32          // sb_csum as computed
	dirty    uint64          // bitmap bits set
	host     string          // this host's name, for "local to host"
}

// readExamine reads the superblock, the bitmap superblock and the bitmap's bits of the member at path.
func readExamine(path string) (*examined, error) {
	d, err := block.OpenFile(path, block.FileOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := array.Examine(d)
	if errors.Is(err, array.ErrNoMembers) {
		return nil, fmt.Errorf("no md superblock: no md v1.2 magic at byte %d", md.SuperOffsetV12*md.SectorSize)
	}
	if err != nil {
		return nil, err
	}
	r := &examined{path: path, super: f.Super, bitmap: f.Bitmap}
	raw := make([]byte, 4096) // the superblock, at sector md.SuperOffsetV12
	if _, err := d.ReadAt(raw, md.SuperOffsetV12*md.SectorSize); err != nil {
		return nil, err
	}
	r.checksum, r.computed = binary.LittleEndian.Uint32(raw[0x0d8:]), md.Checksum(raw)
	if bm := f.Bitmap; bm != nil {
		off := int64(md.SuperOffsetV12+int64(f.Super.BitmapOffset))*md.SectorSize + md.BitmapSuperSize
		n := int64((bm.Bits() + 7) / 8)
		bs := int64(d.LogicalBlockSize())
		start := off / bs * bs
		buf := make([]byte, (off+n-start+bs-1)/bs*bs)
		if start+int64(len(buf)) > d.Size() {
			return nil, fmt.Errorf("bitmap of %d bytes runs past the end of the device", n)
		}
		if _, err := d.ReadAt(buf, start); err != nil {
			return nil, err
		}
		for i := range bm.Bits() {
			if md.BitSet(buf[off-start:], i) {
				r.dirty++
			}
		}
	}
	return r, nil
}

// write prints the report with mdadm --examine's labels, right-aligned to the colon at column 16.
func (r *examined) write(w io.Writer) {
	s := r.super
	kv := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%15s : %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "%s:\n", r.path)
	kv("Magic", "%x", md.SuperblockMagic)
	kv("Version", "1.2")
	kv("Feature Map", "%#x", s.FeatureMap)
	kv("Array UUID", "%s", formatUUID(s.SetUUID))
	name := s.SetName
	if host, _, ok := strings.Cut(name, ":"); ok && r.host != "" && host == r.host {
		name += "  (local to host " + r.host + ")"
	}
	kv("Name", "%s", name)
	kv("Creation Time", "%s", mdTime(s.CTime))
	kv("Raid Level", "%s", levelName(s.Level))
	kv("Raid Devices", "%d", s.RaidDisks)
	fmt.Fprintln(w)
	kv("Avail Dev Size", "%d sectors%s", s.DataSize, humanSize(int64(s.DataSize)*md.SectorSize))
	if size := arraySize(s); size > 0 {
		kv("Array Size", "%d KiB%s", size/1024, humanSize(size))
	}
	if s.Size != s.DataSize {
		kv("Used Dev Size", "%d sectors%s", s.Size, humanSize(int64(s.Size)*md.SectorSize))
	}
	kv("Data Offset", "%d sectors", s.DataOffset)
	kv("Super Offset", "%d sectors", s.SuperOffset)
	if s.FeatureMap&md.FeatureRecoveryOffset != 0 {
		kv("Recovery Offset", "%d sectors", s.RecoveryOffset)
	}
	if !s.Clean() {
		kv("Resync Offset", "%d sectors", s.ResyncOffset)
	}
	state := "clean"
	if !s.Clean() {
		state = "active"
	}
	kv("State", "%s", state)
	kv("Device UUID", "%s", formatUUID(s.DeviceUUID))
	fmt.Fprintln(w)
	if bm := r.bitmap; bm != nil {
		kv("Internal Bitmap", "%d sectors from superblock", s.BitmapOffset)
		kv("Bitmap Version", "%d", bm.Version)
		kv("Bitmap Events", "%d (cleared at %d)", bm.Events, bm.EventsCleared)
		kv("Bitmap State", "%s", bitmapState(bm.State))
		kv("Bitmap Chunk", "%s", binarySize(int64(bm.ChunkSize)))
		kv("Bitmap Daemon", "%ds flush period", bm.DaemonSleep)
		of := "of each member"
		if s.Level == md.LevelRAID10 {
			of = "of the array"
		}
		kv("Bitmap Covers", "%d KiB %s", bm.SyncSize/2, of)
		pct := 0.0
		if bm.Bits() > 0 {
			pct = float64(r.dirty) * 100 / float64(bm.Bits())
		}
		kv("Bitmap Bits", "%d bits (chunks), %d dirty (%.1f%%)", bm.Bits(), r.dirty, pct)
	}
	kv("Update Time", "%s", mdTime(s.UTime))
	if s.BBLogSize != 0 {
		kv("Bad Block Log", "%d entries available at offset %d sectors", int(s.BBLogSize)*md.SectorSize/8, s.BBLogOffset)
	}
	if r.checksum == r.computed {
		kv("Checksum", "%x - correct", r.checksum)
	} else {
		kv("Checksum", "%x - expected %x", r.checksum, r.computed)
	}
	kv("Events", "%d", s.Events)
	fmt.Fprintln(w)
	switch s.Level {
	case md.LevelRAID5, md.LevelRAID6, md.LevelRAID10:
		kv("Layout", "%s", layoutName(s.Level, s.Layout))
	}
	if s.Level != md.LevelRAID1 {
		kv("Chunk Size", "%dK", s.ChunkSize/2)
	}
	fmt.Fprintln(w)
	// mdadm's own quirk: these two labels end one column early.
	fmt.Fprintf(w, "   Device Role : %s\n", roleName(s.Role(), s.RaidDisks))
	fmt.Fprintf(w, "   Array State : %s ('A' == active, '.' == missing, 'R' == replacing)\n", arrayState(s))
}

// arrayState is mdadm's string of one letter per slot: A when one member holds it, R when two (one being
// a replacement), . when none, ? when more.
func arrayState(s *md.Superblock) string {
	var b strings.Builder
	for slot := range s.RaidDisks {
		n := 0
		for _, r := range s.DevRoles {
			if uint32(r) == slot {
				n++
			}
		}
		switch {
		case n == 2 && s.Level > 0:
			b.WriteByte('R')
		case n == 1:
			b.WriteByte('A')
		case n == 0:
			b.WriteByte('.')
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

func roleName(role uint16, raidDisks uint32) string {
	switch {
	case role == md.RoleSpare:
		return "spare"
	case role == md.RoleFaulty:
		return "faulty"
	case role == md.RoleJournal:
		return "Journal"
	case uint32(role) < raidDisks:
		return fmt.Sprintf("Active device %d", role)
	}
	return fmt.Sprintf("spare (role %d)", role)
}

// arraySize is the array's size in bytes as this engine lays it out from one member's superblock (md's
// own sizes: RAID0 stripes each member's whole data_size, the others use size; a partial last chunk is
// not used).
func arraySize(s *md.Superblock) int64 {
	n := int64(s.RaidDisks)
	chunk := int64(s.ChunkSize) * md.SectorSize
	used := int64(s.Size) * md.SectorSize
	if chunk > 0 {
		used = used / chunk * chunk
	}
	switch s.Level {
	case md.LevelRAID0:
		return int64(s.DataSize) * md.SectorSize / max(chunk, 1) * chunk * n
	case md.LevelRAID1:
		return int64(s.Size) * md.SectorSize
	case md.LevelRAID5:
		return (n - 1) * used
	case md.LevelRAID6:
		return (n - 2) * used
	case md.LevelRAID10:
		if near := int64(s.Layout & 0xff); near > 0 && chunk > 0 {
			return used / chunk * n / near * chunk
		}
	}
	return 0
}

func levelName(level int32) string {
	switch level {
	case md.LevelLinear:
		return "linear"
	case md.LevelMultipath:
		return "multipath"
	case md.LevelFaulty:
		return "faulty"
	}
	return fmt.Sprintf("raid%d", level)
}

// layoutName spells a layout as mdadm does.
func layoutName(level int32, layout uint32) string {
	if level == md.LevelRAID10 {
		var parts []string
		if near := layout & 0xff; near > 1 {
			parts = append(parts, fmt.Sprintf("near=%d", near))
		}
		if far := layout >> 8 & 0xff; far > 1 {
			kind := "far"
			if layout&0x10000 != 0 {
				kind = "offset"
			}
			parts = append(parts, fmt.Sprintf("%s=%d", kind, far))
		}
		if len(parts) == 0 {
			return fmt.Sprintf("%#x", layout)
		}
		return strings.Join(parts, ", ")
	}
	names := map[uint32]string{0: "left-asymmetric", 1: "right-asymmetric", 2: "left-symmetric", 3: "right-symmetric",
		4: "parity-first", 5: "parity-last"}
	if n, ok := names[layout]; ok {
		return n
	}
	return fmt.Sprint(layout)
}

func bitmapState(state uint32) string {
	var s []string
	if state&md.BitmapStateStale != 0 {
		s = append(s, "Out of date (the next assembly resyncs everything)")
	}
	if state&md.BitmapStateWriteError != 0 {
		s = append(s, "write error")
	}
	if len(s) == 0 {
		return "OK"
	}
	return strings.Join(s, ", ")
}

// mdTime prints a timestamp as mdadm does (ctime(3), local time).
func mdTime(t md.Time) string { return t.Time().Local().Format(time.ANSIC) }

// humanSize is mdadm's human_size: " (31.00 MiB 32.51 MB)" in both binary and decimal units, rounded
// half up to 1/100, and nothing below 5000 KiB.
func humanSize(b int64) string {
	if b < 5000*1024 {
		return ""
	}
	bin, dec, ub, ud := int64(1)<<20, int64(1000000), "MiB", "MB"
	switch {
	case b >= 2<<40:
		bin, dec, ub, ud = 1<<40, 1000000000000, "TiB", "TB"
	case b >= 2<<30:
		bin, dec, ub, ud = 1<<30, 1000000000, "GiB", "GB"
	}
	hb := (mulDiv(b, 200, bin) + 1) / 2
	hd := (mulDiv(b, 200, dec) + 1) / 2
	return fmt.Sprintf(" (%d.%02d %s %d.%02d %s)", hb/100, hb%100, ub, hd/100, hd%100, ud)
}

// mulDiv is a*m/d without overflowing int64 on the way.
func mulDiv(a, m, d int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(m))
	q, _ := bits.Div64(hi, lo, uint64(d))
	return int64(q)
}

// binarySize prints a power-of-two size like mdadm -X's chunk size: "4 MB" meaning 4 MiB.
func binarySize(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GB"}, {20, "MB"}, {10, "KB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}
