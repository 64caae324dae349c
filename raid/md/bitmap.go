package md

import (
	"encoding/binary"
)

// Write-intent bitmap constants (drivers/md/md-bitmap.h).
const (
	BitmapMagic        = 0x6d746962 // "bitm"
	BitmapVersion      = 4          // BITMAP_MAJOR_HI: bits in little-endian order; what mdadm writes
	bitmapVersionLo    = 3          // BITMAP_MAJOR_LO: host-endian bits, identical on little-endian hosts
	bitmapVersionClust = 5          // BITMAP_MAJOR_CLUSTERED
	BitmapSuperSize    = 256        // bytes; the bits follow at once
	DefaultDaemonSleep = 5          // seconds between lazy clears, mdadm's default
)

// Bitmap state bits (enum bitmap_state, bit numbers).
const (
	BitmapStateStale      = 1 << 1 // the bitmap cannot be trusted: resync everything
	BitmapStateWriteError = 1 << 2
)

// rawBitmap is bitmap_super_t.
type rawBitmap [BitmapSuperSize]byte

func (r *rawBitmap) magic() []byte           { return r[0:][:4] }
func (r *rawBitmap) version() []byte         { return r[4:][:4] }
func (r *rawBitmap) uuid() []byte            { return r[8:][:16] }
func (r *rawBitmap) events() []byte          { return r[24:][:8] }
func (r *rawBitmap) eventsCleared() []byte   { return r[32:][:8] }
func (r *rawBitmap) syncSize() []byte        { return r[40:][:8] }
func (r *rawBitmap) state() []byte           { return r[48:][:4] }
func (r *rawBitmap) chunksize() []byte       { return r[52:][:4] }
func (r *rawBitmap) daemonSleep() []byte     { return r[56:][:4] }
func (r *rawBitmap) writeBehind() []byte     { return r[60:][:4] }
func (r *rawBitmap) sectorsReserved() []byte { return r[64:][:4] }
func (r *rawBitmap) nodes() []byte           { return r[68:][:4] }
func (r *rawBitmap) clusterName() []byte     { return r[72:][:64] }

// BitmapSuper is a decoded write-intent bitmap superblock.
type BitmapSuper struct {
	Version         uint32   // 4 (3 is read too)
	UUID            [16]byte // = the array's set_uuid
	Events          uint64   // = the superblock's events when the bitmap was last written
	EventsCleared   uint64   // events when bits were last cleared
	SyncSize        uint64   // sectors covered: per-member size for raid1/5/6, the array size for raid10
	State           uint32   // BitmapStateStale | BitmapStateWriteError
	ChunkSize       uint32   // bytes of array (raid10) or member data per bit; a power of two
	DaemonSleep     uint32   // seconds
	WriteBehind     uint32   // outstanding write-behind writes allowed (raid1 only); 0
	SectorsReserved uint32   // sectors reserved for superblock plus bits
}

// Bits returns the number of bits the bitmap has: one per ChunkSize bytes of SyncSize sectors.
func (b *BitmapSuper) Bits() uint64 {
	if b.ChunkSize == 0 {
		return 0
	}
	bytes := b.SyncSize * SectorSize
	return (bytes + uint64(b.ChunkSize) - 1) / uint64(b.ChunkSize)
}

// BitmapLen is the bytes the bitmap occupies on disk (superblock plus bits), rounded up to blockSize.
func (b *BitmapSuper) BitmapLen(blockSize int) int {
	n := BitmapSuperSize + int((b.Bits()+7)/8)
	return (n + blockSize - 1) / blockSize * blockSize
}

// DecodeBitmap parses a bitmap superblock from the first 256 bytes of b. Clustered bitmaps are refused.
// Errors are *FieldError.
func DecodeBitmap(b []byte) (*BitmapSuper, error) {
	c := checker{structName: "bitmap"}
	c.want(len(b) >= BitmapSuperSize, "magic", 0, ErrShort, "have %d bytes, need %d", len(b), BitmapSuperSize)
	if c.err != nil {
		return nil, c.err
	}
	var r rawBitmap
	copy(r[:], b)
	le := binary.LittleEndian
	magic := le.Uint32(r.magic())
	c.want(magic == BitmapMagic, "magic", 0, ErrMagic, "%#08x, want %#08x", magic, BitmapMagic)
	v := le.Uint32(r.version())
	c.want(v != bitmapVersionClust, "version", 4, ErrUnsupported, "%d: clustered bitmap", v)
	c.want(v == BitmapVersion || v == bitmapVersionLo, "version", 4, ErrVersion, "%d, want 3 or 4", v)
	nodes := le.Uint32(r.nodes())
	c.want(nodes == 0, "nodes", 68, ErrUnsupported, "%d cluster nodes", nodes)
	bm := &BitmapSuper{
		Version:         v,
		Events:          le.Uint64(r.events()),
		EventsCleared:   le.Uint64(r.eventsCleared()),
		SyncSize:        le.Uint64(r.syncSize()),
		State:           le.Uint32(r.state()),
		ChunkSize:       le.Uint32(r.chunksize()),
		DaemonSleep:     le.Uint32(r.daemonSleep()),
		WriteBehind:     le.Uint32(r.writeBehind()),
		SectorsReserved: le.Uint32(r.sectorsReserved()),
	}
	copy(bm.UUID[:], r.uuid())
	// md requires a power-of-two chunk of at least 512 bytes.
	c.want(bm.ChunkSize >= 512 && bm.ChunkSize&(bm.ChunkSize-1) == 0, "chunksize", 52, ErrInvalid,
		"%d bytes; want a power of two of at least 512", bm.ChunkSize)
	if c.err != nil {
		return nil, c.err
	}
	return bm, nil
}

// EncodeBitmap returns the 256-byte bitmap superblock.
func EncodeBitmap(bm *BitmapSuper) ([]byte, error) {
	c := checker{structName: "bitmap"}
	c.want(bm.Version == BitmapVersion || bm.Version == bitmapVersionLo, "version", 4, ErrVersion, "%d, want 3 or 4", bm.Version)
	c.want(bm.ChunkSize >= 512 && bm.ChunkSize&(bm.ChunkSize-1) == 0, "chunksize", 52, ErrInvalid,
		"%d bytes; want a power of two of at least 512", bm.ChunkSize)
	if c.err != nil {
		return nil, c.err
	}
	var r rawBitmap
	le := binary.LittleEndian
	le.PutUint32(r.magic(), BitmapMagic)
	le.PutUint32(r.version(), bm.Version)
	copy(r.uuid(), bm.UUID[:])
	le.PutUint64(r.events(), bm.Events)
	le.PutUint64(r.eventsCleared(), bm.EventsCleared)
	le.PutUint64(r.syncSize(), bm.SyncSize)
	le.PutUint32(r.state(), bm.State)
	le.PutUint32(r.chunksize(), bm.ChunkSize)
	le.PutUint32(r.daemonSleep(), bm.DaemonSleep)
	le.PutUint32(r.writeBehind(), bm.WriteBehind)
	le.PutUint32(r.sectorsReserved(), bm.SectorsReserved)
	return r[:], nil
}

// BitSet reports bit i of the bitmap bits (little-endian bit order: bit i is bit i%8 of byte i/8).
func BitSet(bits []byte, i uint64) bool { return bits[i/8]&(1<<(i%8)) != 0 }

// SetBit sets or clears bit i of the bitmap bits.
func SetBit(bits []byte, i uint64, v bool) {
	if v {
		bits[i/8] |= 1 << (i % 8)
	} else {
		bits[i/8] &^= 1 << (i % 8)
	}
}
