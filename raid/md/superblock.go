package md

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"
)

// Placement of the v1.2 superblock on a member, in bytes and in sectors.
const (
	SectorSize        = 512 // md counts in 512-byte sectors, whatever the logical block size
	SuperOffsetV12    = 8   // sectors from the member's start to a v1.2 superblock (4 KiB)
	SuperblockMagic   = 0xa92b4efc
	superFixedSize    = 256  // bytes before dev_roles
	MaxDevs           = 1920 // (4096-256)/2: the most dev_roles that fit the 4 KiB the kernel reads
	superMaxSize      = superFixedSize + 2*MaxDevs
	DefaultMaxDev     = 128 // mdadm's max_dev for arrays of up to 128 members (superblock of 512 bytes)
	maxSetNameLen     = 32
	ctimeSecondsBits  = 40
	ctimeSecondsMask  = 1<<ctimeSecondsBits - 1
	ctimeMicrosMaxVal = 1<<24 - 1
)

// Feature bits of feature_map (MD_FEATURE_* in md_p.h).
const (
	FeatureBitmapOffset     = 1 << 0  // bitmap_offset is meaningful: internal write-intent bitmap
	FeatureRecoveryOffset   = 1 << 1  // recovery_offset is meaningful: this member is partly rebuilt
	FeatureReshapeActive    = 1 << 2  // a reshape is in progress
	FeatureBadBlocks        = 1 << 3  // the bad-block log is not empty
	FeatureReplacement      = 1 << 4  // this member replaces an active one with the same role
	FeatureReshapeBackwards = 1 << 5  // reshape runs backwards
	FeatureNewOffset        = 1 << 6  // new_offset must be honoured (reshape)
	FeatureRecoveryBitmap   = 1 << 7  // the recovery is guided by the bitmap
	FeatureClustered        = 1 << 8  // clustered md
	FeatureJournal          = 1 << 9  // raid5 journal (write cache)
	FeaturePPL              = 1 << 10 // raid5 partial parity log
	FeatureMultiplePPLs     = 1 << 11 // several PPLs
	FeatureRAID0Layout      = 1 << 12 // layout is meaningful for raid0 (unequal members)

	// SupportedFeatures are the bits this engine understands. Every other bit makes Decode fail with
	// ErrUnsupported rather than misread the array.
	SupportedFeatures = FeatureBitmapOffset | FeatureRecoveryOffset | FeatureRAID0Layout
)

var featureNames = [...]string{
	"bitmap offset", "recovery offset", "reshape active", "bad-block log", "replacement",
	"reshape backwards", "new offset (reshape)", "recovery bitmap", "clustered", "journal", "PPL",
	"multiple PPLs", "raid0 layout",
}

// Levels (the level field, signed).
const (
	LevelLinear    = -1
	LevelMultipath = -4
	LevelFaulty    = -5
	LevelRAID0     = 0
	LevelRAID1     = 1
	LevelRAID4     = 4
	LevelRAID5     = 5
	LevelRAID6     = 6
	LevelRAID10    = 10
)

// Layouts (the layout field).
const (
	LayoutLeftSymmetric = 2     // raid5/raid6 ALGORITHM_LEFT_SYMMETRIC, mdadm's default
	LayoutRAID10Near2   = 0x102 // raid10: near copies | far copies<<8 | offset<<16; n2 = near 2, far 1
)

// Roles in dev_roles besides a slot number.
const (
	RoleSpare   = 0xffff
	RoleFaulty  = 0xfffe
	RoleJournal = 0xfffd
)

// ResyncClean in resync_offset means the array is in sync (clean).
const ResyncClean = ^uint64(0)

// Devflags bits.
const (
	DevFlagWriteMostly = 1
	DevFlagFailFast    = 2
)

// rawSuperblock is struct mdp_superblock_1 with room for MaxDevs roles. Accessors return the field's bytes,
// at the offsets of md_p.h.
type rawSuperblock [superMaxSize]byte

func (r *rawSuperblock) magic() []byte            { return r[0x000:][:4] }
func (r *rawSuperblock) majorVersion() []byte     { return r[0x004:][:4] }
func (r *rawSuperblock) featureMap() []byte       { return r[0x008:][:4] }
func (r *rawSuperblock) pad0() []byte             { return r[0x00c:][:4] }
func (r *rawSuperblock) setUUID() []byte          { return r[0x010:][:16] }
func (r *rawSuperblock) setName() []byte          { return r[0x020:][:32] }
func (r *rawSuperblock) ctime() []byte            { return r[0x040:][:8] }
func (r *rawSuperblock) level() []byte            { return r[0x048:][:4] }
func (r *rawSuperblock) layout() []byte           { return r[0x04c:][:4] }
func (r *rawSuperblock) size() []byte             { return r[0x050:][:8] }
func (r *rawSuperblock) chunksize() []byte        { return r[0x058:][:4] }
func (r *rawSuperblock) raidDisks() []byte        { return r[0x05c:][:4] }
func (r *rawSuperblock) bitmapOffset() []byte     { return r[0x060:][:4] }
func (r *rawSuperblock) newLevel() []byte         { return r[0x064:][:4] }
func (r *rawSuperblock) reshapePosition() []byte  { return r[0x068:][:8] }
func (r *rawSuperblock) deltaDisks() []byte       { return r[0x070:][:4] }
func (r *rawSuperblock) newLayout() []byte        { return r[0x074:][:4] }
func (r *rawSuperblock) newChunk() []byte         { return r[0x078:][:4] }
func (r *rawSuperblock) newOffset() []byte        { return r[0x07c:][:4] }
func (r *rawSuperblock) dataOffset() []byte       { return r[0x080:][:8] }
func (r *rawSuperblock) dataSize() []byte         { return r[0x088:][:8] }
func (r *rawSuperblock) superOffset() []byte      { return r[0x090:][:8] }
func (r *rawSuperblock) recoveryOffset() []byte   { return r[0x098:][:8] }
func (r *rawSuperblock) devNumber() []byte        { return r[0x0a0:][:4] }
func (r *rawSuperblock) cntCorrectedRead() []byte { return r[0x0a4:][:4] }
func (r *rawSuperblock) deviceUUID() []byte       { return r[0x0a8:][:16] }
func (r *rawSuperblock) devflags() []byte         { return r[0x0b8:][:1] }
func (r *rawSuperblock) bblogShift() []byte       { return r[0x0b9:][:1] }
func (r *rawSuperblock) bblogSize() []byte        { return r[0x0ba:][:2] }
func (r *rawSuperblock) bblogOffset() []byte      { return r[0x0bc:][:4] }
func (r *rawSuperblock) utime() []byte            { return r[0x0c0:][:8] }
func (r *rawSuperblock) events() []byte           { return r[0x0c8:][:8] }
func (r *rawSuperblock) resyncOffset() []byte     { return r[0x0d0:][:8] }
func (r *rawSuperblock) sbCsum() []byte           { return r[0x0d8:][:4] }
func (r *rawSuperblock) maxDev() []byte           { return r[0x0dc:][:4] }
func (r *rawSuperblock) pad3() []byte             { return r[0x0e0:][:32] }
func (r *rawSuperblock) devRoles(n int) []byte    { return r[0x100:][:2*n] }

// Time is md's timestamp (ctime, utime): low 40 bits seconds since 1970, high 24 bits microseconds.
type Time uint64

// MakeTime converts t to md's timestamp in whole seconds, the microseconds left 0 as mdadm and the kernel
// write them: Linux 6.1 reads ctime as plain seconds, so microseconds make it a date in 2106, and
// mdadm --detail then disowns every member (its ctime differs from the kernel's).
func MakeTime(t time.Time) Time {
	return Time(uint64(t.Unix()) & ctimeSecondsMask)
}

// Time returns t as a time.Time.
func (t Time) Time() time.Time {
	return time.Unix(int64(t&ctimeSecondsMask), int64(t>>ctimeSecondsBits)*1000)
}

// Superblock is a decoded md v1.x superblock. Sizes and offsets are in 512-byte sectors. The reshape fields
// are not kept: Decode refuses reshaping arrays and Encode writes them as zeros.
type Superblock struct {
	FeatureMap       uint32
	SetUUID          [16]byte // the array's UUID, equal on every member
	SetName          string   // "homehost:name", at most 32 bytes, no NUL
	CTime            Time     // creation time
	Level            int32    // LevelRAID0 ...
	Layout           uint32   // LayoutLeftSymmetric, LayoutRAID10Near2, ...
	Size             uint64   // sectors of each member used by the array
	ChunkSize        uint32   // sectors; 0 for raid1
	RaidDisks        uint32   // members in the array, degraded or not
	BitmapOffset     int32    // sectors from the superblock to the bitmap; with FeatureBitmapOffset
	DataOffset       uint64   // sectors from the member's start to its data
	DataSize         uint64   // sectors usable for data from DataOffset
	SuperOffset      uint64   // sectors from the member's start to this superblock (8 for v1.2)
	RecoveryOffset   uint64   // sectors of data rebuilt on this member; with FeatureRecoveryOffset
	DevNumber        uint32   // this member's permanent index into DevRoles
	CntCorrectedRead uint32
	DeviceUUID       [16]byte // this member's UUID
	DevFlags         uint8    // DevFlagWriteMostly | DevFlagFailFast
	BBLogShift       uint8    // bad-block log: block size shift; space may be reserved while the log is empty
	BBLogSize        uint16   // bad-block log: sectors reserved
	BBLogOffset      int32    // bad-block log: sectors from the superblock, signed
	UTime            Time     // last update time
	Events           uint64   // bumped on every superblock update; lower than the set's newest = stale
	ResyncOffset     uint64   // sectors known in sync; ResyncClean when clean, 0 for a full resync
	DevRoles         []uint16 // role of each dev_number: a slot, RoleSpare, RoleFaulty; len is max_dev
}

// Checksum computes sb_csum as the kernel's calc_sb_1_csum: the bytes [0, 256+2*max_dev) as little-endian
// u32 words with sb_csum read as zero, summed into 64 bits (a trailing u16 added when the length is 2 mod
// 4), folded as low32 + high32. b must hold at least 256+2*max_dev bytes.
func Checksum(b []byte) uint32 {
	maxDev := binary.LittleEndian.Uint32(b[0x0dc:])
	size := superFixedSize + 2*int(maxDev)
	var sum uint64
	i := 0
	for ; size-i >= 4; i += 4 {
		if i == 0x0d8 {
			continue // sb_csum itself counts as zero
		}
		sum += uint64(binary.LittleEndian.Uint32(b[i:]))
	}
	if size-i == 2 {
		sum += uint64(binary.LittleEndian.Uint16(b[i:]))
	}
	return uint32(sum&0xffffffff + sum>>32)
}

// SuperblockLen is how many bytes a superblock with maxDev roles occupies on disk: 256 + 2*maxDev rounded
// up to blockSize (512, or 4096 on 4Kn members), which is the unit md writes.
func SuperblockLen(maxDev, blockSize int) int {
	n := superFixedSize + 2*maxDev
	return (n + blockSize - 1) / blockSize * blockSize
}

// Decode parses a v1.x superblock from b (at least 256 + 2*max_dev bytes, e.g. the 4 KiB at byte 4096 of a
// member). It checks magic, version, max_dev, the checksum and the feature map; arrays using a feature this
// engine does not implement are refused with ErrUnsupported. Errors are *FieldError.
func Decode(b []byte) (*Superblock, error) {
	c := checker{structName: "superblock"}
	c.want(len(b) >= superFixedSize, "magic", 0, ErrShort, "have %d bytes, need %d", len(b), superFixedSize)
	if c.err != nil {
		return nil, c.err
	}
	var r rawSuperblock
	copy(r[:], b)
	le := binary.LittleEndian
	magic := le.Uint32(r.magic())
	c.want(magic == SuperblockMagic, "magic", 0x000, ErrMagic, "%#08x, want %#08x", magic, SuperblockMagic)
	major := le.Uint32(r.majorVersion())
	c.want(major == 1, "major_version", 0x004, ErrVersion, "%d, want 1", major)
	maxDev := le.Uint32(r.maxDev())
	c.want(maxDev <= MaxDevs, "max_dev", 0x0dc, ErrInvalid, "%d, at most %d", maxDev, MaxDevs)
	if c.err != nil {
		return nil, c.err
	}
	need := superFixedSize + 2*int(maxDev)
	c.want(len(b) >= need, "dev_roles", 0x100, ErrShort, "have %d bytes, need %d for max_dev %d", len(b), need, maxDev)
	if c.err != nil {
		return nil, c.err
	}
	sum, stored := Checksum(b), le.Uint32(r.sbCsum())
	c.want(sum == stored, "sb_csum", 0x0d8, ErrChecksum, "stored %#08x, computed %#08x", stored, sum)
	fm := le.Uint32(r.featureMap())
	if bad := fm &^ SupportedFeatures; bad != 0 {
		c.want(false, "feature_map", 0x008, ErrUnsupported, "%#x: %s", fm, describeFeatures(bad))
	}
	name := r.setName()
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	s := &Superblock{
		FeatureMap:       fm,
		SetName:          string(name),
		CTime:            Time(le.Uint64(r.ctime())),
		Level:            int32(le.Uint32(r.level())),
		Layout:           le.Uint32(r.layout()),
		Size:             le.Uint64(r.size()),
		ChunkSize:        le.Uint32(r.chunksize()),
		RaidDisks:        le.Uint32(r.raidDisks()),
		BitmapOffset:     int32(le.Uint32(r.bitmapOffset())),
		DataOffset:       le.Uint64(r.dataOffset()),
		DataSize:         le.Uint64(r.dataSize()),
		SuperOffset:      le.Uint64(r.superOffset()),
		RecoveryOffset:   le.Uint64(r.recoveryOffset()),
		DevNumber:        le.Uint32(r.devNumber()),
		CntCorrectedRead: le.Uint32(r.cntCorrectedRead()),
		DevFlags:         r.devflags()[0],
		BBLogShift:       r.bblogShift()[0],
		BBLogSize:        le.Uint16(r.bblogSize()),
		BBLogOffset:      int32(le.Uint32(r.bblogOffset())),
		UTime:            Time(le.Uint64(r.utime())),
		Events:           le.Uint64(r.events()),
		ResyncOffset:     le.Uint64(r.resyncOffset()),
		DevRoles:         make([]uint16, maxDev),
	}
	copy(s.SetUUID[:], r.setUUID())
	copy(s.DeviceUUID[:], r.deviceUUID())
	roles := r.devRoles(int(maxDev))
	for i := range s.DevRoles {
		s.DevRoles[i] = le.Uint16(roles[2*i:])
	}
	// Without the recovery-offset feature the field may hold a journal tail or garbage: md ignores it.
	if fm&FeatureRecoveryOffset == 0 {
		s.RecoveryOffset = 0
	}
	if fm&FeatureBitmapOffset == 0 {
		s.BitmapOffset = 0
	}
	if c.err != nil {
		return nil, c.err
	}
	return s, nil
}

func describeFeatures(bits32 uint32) string {
	var out []byte
	for bits32 != 0 {
		i := bits.TrailingZeros32(bits32)
		bits32 &^= 1 << i
		if len(out) > 0 {
			out = append(out, ", "...)
		}
		if i < len(featureNames) {
			out = fmt.Appendf(out, "bit %d (%s)", i, featureNames[i])
		} else {
			out = fmt.Appendf(out, "bit %d (unknown)", i)
		}
	}
	return string(out)
}

// Encode returns s as it goes on disk: SuperblockLen(len(s.DevRoles), blockSize) bytes with the checksum
// set. Reshape fields and padding are zero. It refuses what Decode would refuse.
func Encode(s *Superblock, blockSize int) ([]byte, error) {
	c := checker{structName: "superblock"}
	c.want(blockSize == 512 || blockSize == 4096, "max_dev", 0x0dc, ErrInvalid, "block size %d, want 512 or 4096", blockSize)
	c.want(len(s.DevRoles) <= MaxDevs, "max_dev", 0x0dc, ErrInvalid, "%d roles, at most %d", len(s.DevRoles), MaxDevs)
	c.want(len(s.SetName) <= maxSetNameLen && !bytes.ContainsRune([]byte(s.SetName), 0), "set_name", 0x020, ErrInvalid,
		"%q: at most %d bytes, no NUL", s.SetName, maxSetNameLen)
	if bad := s.FeatureMap &^ SupportedFeatures; bad != 0 {
		c.want(false, "feature_map", 0x008, ErrUnsupported, "%#x: %s", s.FeatureMap, describeFeatures(bad))
	}
	if c.err != nil {
		return nil, c.err
	}
	var r rawSuperblock
	le := binary.LittleEndian
	le.PutUint32(r.magic(), SuperblockMagic)
	le.PutUint32(r.majorVersion(), 1)
	le.PutUint32(r.featureMap(), s.FeatureMap)
	copy(r.setUUID(), s.SetUUID[:])
	copy(r.setName(), s.SetName)
	le.PutUint64(r.ctime(), uint64(s.CTime))
	le.PutUint32(r.level(), uint32(s.Level))
	le.PutUint32(r.layout(), s.Layout)
	le.PutUint64(r.size(), s.Size)
	le.PutUint32(r.chunksize(), s.ChunkSize)
	le.PutUint32(r.raidDisks(), s.RaidDisks)
	if s.FeatureMap&FeatureBitmapOffset != 0 {
		le.PutUint32(r.bitmapOffset(), uint32(s.BitmapOffset))
	}
	le.PutUint64(r.dataOffset(), s.DataOffset)
	le.PutUint64(r.dataSize(), s.DataSize)
	le.PutUint64(r.superOffset(), s.SuperOffset)
	if s.FeatureMap&FeatureRecoveryOffset != 0 {
		le.PutUint64(r.recoveryOffset(), s.RecoveryOffset)
	}
	le.PutUint32(r.devNumber(), s.DevNumber)
	le.PutUint32(r.cntCorrectedRead(), s.CntCorrectedRead)
	copy(r.deviceUUID(), s.DeviceUUID[:])
	r.devflags()[0] = s.DevFlags
	r.bblogShift()[0] = s.BBLogShift
	le.PutUint16(r.bblogSize(), s.BBLogSize)
	le.PutUint32(r.bblogOffset(), uint32(s.BBLogOffset))
	le.PutUint64(r.utime(), uint64(s.UTime))
	le.PutUint64(r.events(), s.Events)
	le.PutUint64(r.resyncOffset(), s.ResyncOffset)
	le.PutUint32(r.maxDev(), uint32(len(s.DevRoles)))
	roles := r.devRoles(len(s.DevRoles))
	for i, role := range s.DevRoles {
		le.PutUint16(roles[2*i:], role)
	}
	out := make([]byte, SuperblockLen(len(s.DevRoles), blockSize))
	copy(out, r[:])
	le.PutUint32(out[0x0d8:], Checksum(out))
	return out, nil
}

// Role returns the slot of this member (its dev_roles entry), or RoleSpare when dev_number is outside
// dev_roles.
func (s *Superblock) Role() uint16 {
	if int(s.DevNumber) >= len(s.DevRoles) {
		return RoleSpare
	}
	return s.DevRoles[s.DevNumber]
}

// Clean reports whether the array was stopped in sync.
func (s *Superblock) Clean() bool { return s.ResyncOffset == ResyncClean }
