//go:build qa

package raidinterop

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"

	"opensan/gateway/block"
	"opensan/raid/array"
	"opensan/raid/md"
)

// homehost is the homehost part of every set name we write ("opensan:NAME"): not the guest's hostname.
const homehost = "opensan"

// memberSize is the size of each member file of parts 1 and 2, in bytes (sparse).
const memberSize = 64 << 20

// smallMemberSize is the member size of the hot spare and rebuild cases (bytes): their point is the
// superblocks, and the guest hashes and scrubs less.
const smallMemberSize = 32 << 20

// hostArray is an array this engine made (part 1), crashed and repaired (part 3) or left partway through a
// rebuild (part 4), as the guest should find it.
type hostArray struct {
	name     string // set name without the homehost; also the subtest name
	level, n int
	bitmap   bool
	bs       int   // logical block size of the members, and of the guest's disks
	missing  []int // slots whose member the guest does not get (degraded cases)
	spares   int   // hot spares after the n active members (part 1)
	member   int64 // bytes of each member file; memberSize when 0
	crash    bool  // part 3: crash workload first
	rebuild  bool  // part 4: member 0 replaced by a blank device whose rebuild is stopped partway
	seed     uint64

	// Filled in by the host before the boot.
	uuid     string   // mdadmUUID
	size     int64    // bytes
	hash     string   // sha256 of the whole array, hex
	paths    []string // member files, by slot, then the spares
	prepared bool     // false: preparation failed (already reported)

	// Part 4: the replacement of member 0 as its superblock says after the stopped rebuild, in sectors of
	// its data area.
	recoveryOffset, dataSectors uint64

	// Filled in when the guest's disks are laid out.
	serials []string // virtio serial of each file in paths
}

// memberBytes is the size of each of c's member files.
func (h *hostArray) memberBytes() int64 { return cmp.Or(h.member, memberSize) }

// check says whether the guest should scrub the array: redundant and not degraded.
func (h *hostArray) check() bool { return h.level != md.LevelRAID0 && len(h.missing) == 0 }

// ourCases are part 1: every level with and without bitmap (RAID0 without), 512- and 4096-byte sectors,
// RAID5/6 degraded by one member, RAID6 by two, and a RAID5 with a hot spare. Member counts vary a little
// between the two block sizes so both an odd and an even RAID10 and two RAID5/6 widths are covered.
func ourCases() []*hostArray {
	var cs []*hostArray
	for _, bs := range []int{512, 4096} {
		wide := 0
		if bs == 4096 {
			wide = 1
		}
		for _, g := range []struct{ level, n int }{
			{md.LevelRAID0, 2 + wide}, {md.LevelRAID1, 2}, {md.LevelRAID10, 3 + wide},
			{md.LevelRAID5, 3 + wide}, {md.LevelRAID6, 4 + wide},
		} {
			for _, bitmap := range []bool{false, true} {
				if bitmap && g.level == md.LevelRAID0 {
					continue
				}
				cs = append(cs, &hostArray{level: g.level, n: g.n, bitmap: bitmap, bs: bs})
			}
		}
	}
	cs = append(cs,
		&hostArray{level: md.LevelRAID5, n: 3, bitmap: true, bs: 512, missing: []int{2}},
		&hostArray{level: md.LevelRAID6, n: 4, bs: 4096, missing: []int{0}},
		&hostArray{level: md.LevelRAID6, n: 5, bitmap: true, bs: 512, missing: []int{1, 3}},
		&hostArray{level: md.LevelRAID5, n: 3, bs: 512, spares: 1, member: smallMemberSize},
	)
	for _, c := range cs {
		c.name = caseName("ours", c)
	}
	return cs
}

// caseName is short enough for a set name: "homehost:" plus it stays within md's 32 bytes.
func caseName(prefix string, c *hostArray) string {
	s := fmt.Sprintf("%s-r%d-%d", prefix, c.level, c.n)
	if c.bitmap {
		s += "-bm"
	}
	if c.bs == 4096 {
		s += "-4k"
	}
	if len(c.missing) > 0 {
		s += fmt.Sprintf("-miss%d", len(c.missing))
	}
	if c.spares > 0 {
		s += fmt.Sprintf("-sp%d", c.spares)
	}
	return s
}

// caseSeed derives a case's seed from the run's seed and the case's name.
func caseSeed(base uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return base ^ h.Sum64()
}

// sparseFile makes an empty sparse file of size bytes.
func sparseFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openMembers opens member files with logical block size bs; close closes them all.
func openMembers(paths []string, bs int) (devs []block.Device, closeAll func(), err error) {
	closeAll = func() {
		for _, d := range devs {
			d.Close()
		}
	}
	for _, p := range paths {
		f, err := block.OpenFile(p, block.FileOptions{LogicalBlockSize: bs})
		if err != nil {
			closeAll()
			return nil, func() {}, err
		}
		devs = append(devs, f)
	}
	return devs, closeAll, nil
}

// prepareOurs creates c on fresh sparse files in dir (c.n members and c.spares spares), waits for the
// initial sync, writes the whole array with data from c.seed (writes of varying sizes, so stripes are
// written whole and in part), and closes it cleanly. It fills c.uuid, c.size, c.hash and c.paths.
func prepareOurs(dir string, c *hostArray) error {
	for i := range c.n + c.spares {
		p := filepath.Join(dir, fmt.Sprintf("%s-m%d", c.name, i))
		if err := sparseFile(p, c.memberBytes()); err != nil {
			return err
		}
		c.paths = append(c.paths, p)
	}
	devs, closeAll, err := openMembers(c.paths, c.bs)
	if err != nil {
		return err
	}
	defer closeAll()
	a, err := array.Create(devs, array.CreateConfig{Level: c.level, Name: homehost + ":" + c.name, Bitmap: c.bitmap, Spares: c.spares})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	a.WaitSync()
	st := a.Status()
	spares := 0
	for _, m := range st.Members {
		if m.State == "spare" {
			spares++
		}
	}
	if st.Degraded != 0 || spares != c.spares {
		a.Close()
		return fmt.Errorf("after create: %d slots degraded, %d spares (%+v), want 0 and %d", st.Degraded, spares, st.Members, c.spares)
	}
	if c.hash, err = fill(a, c.seed); err != nil {
		a.Close()
		return fmt.Errorf("fill: %w", err)
	}
	a.WaitSync()
	c.uuid, c.size = mdadmUUID(a.UUID()), a.Size()
	if err := a.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// fill writes the whole of a, front to back, with ChaCha8 output keyed by seed, in writes of 4 KiB to
// 2 MiB, and returns the sha256 of what it wrote.
func fill(a *array.Array, seed uint64) (string, error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	data := rand.NewChaCha8(key)
	sizes := rand.New(rand.NewPCG(seed, 1))
	h := sha256.New()
	buf := make([]byte, 2<<20)
	for off := int64(0); off < a.Size(); {
		p := buf[:min(int64(1+sizes.IntN(512))*4096, a.Size()-off)]
		data.Read(p)
		if _, err := a.WriteAt(p, off); err != nil {
			return "", err
		}
		h.Write(p)
		off += int64(len(p))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashArray reads the whole device and returns its sha256.
func hashArray(d block.Device) (string, error) {
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < d.Size(); {
		p := buf[:min(int64(len(buf)), d.Size()-off)]
		if _, err := d.ReadAt(p, off); err != nil {
			return "", err
		}
		h.Write(p)
		off += int64(len(p))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
