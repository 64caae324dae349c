package scsi

import (
	"bytes"
	"encoding/binary"
	"errors"

	"opensan/gateway/block"
)

// Limits reported in the Block Limits VPD page (0xB0) and enforced here.
const (
	maxTransferBytes   = 8 << 20 // MAXIMUM TRANSFER LENGTH, bytes (converted to blocks per LU)
	optimalXferBytes   = 1 << 20 // OPTIMAL TRANSFER LENGTH, bytes
	maxCompareAndWrite = 255     // MAXIMUM COMPARE AND WRITE LENGTH, blocks (the CDB field is one byte)
	maxUnmapBlocks     = 1 << 20 // MAXIMUM UNMAP LBA COUNT per descriptor, blocks (libiscsi: a limit must be <= 1M)
	maxUnmapDescs      = 256     // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
	// MAXIMUM WRITE SAME LENGTH, blocks: the largest WRITE SAME(10) can express. Bigger ranges go through
	// UNMAP or several commands (libiscsi 1.19 also assumes a WRITE(16) of 65536 blocks works whenever
	// this is >= 65536, which the 8 MiB transfer limit would refuse).
	maxWriteSameBlocks = 0xffff
	chunkBytes         = 1 << 20 // long operations work, and check for aborts, in chunks this big
)

func (l *lu) maxXferBlocks() uint32 { return uint32(maxTransferBytes / l.bs) }

// checkRange refuses an LBA range beyond the capacity.
func (x *exec) checkRange(lba uint64, blocks uint64) *senseError {
	if lba > x.lu.blocks || blocks > x.lu.blocks-lba {
		return lbaOutOfRange()
	}
	return nil
}

// checkTransfer refuses a READ/WRITE-family CDB whose blocks lie beyond the capacity (LBA OUT OF RANGE)
// or exceed the Block Limits maximum transfer length (INVALID FIELD IN CDB on the length field).
func (x *exec) checkTransfer(b BlockCDB) *senseError {
	if s := x.checkRange(b.LBA, uint64(b.Blocks)); s != nil {
		return s
	}
	if b.Blocks > x.lu.maxXferBlocks() {
		return invalidCDB(b.LengthField, -1)
	}
	return nil
}

// writable refuses writes to read-only or software-write-protected LUs.
func (x *exec) writable() *senseError {
	if x.lu.readOnly || x.lu.swp.Load() {
		return writeProtected()
	}
	return nil
}

// dataOut claims n bytes of data-out: it records n as what the CDB asked for and refuses the command
// when the initiator sent fewer (SPC-4/FCP-4 allow either truncating or refusing; refusing with INVALID
// FIELD IN COMMAND INFORMATION UNIT writes nothing, which is what libiscsi's residual tests accept).
// Extra bytes beyond n are ignored: the transport reports them as an underflow residual.
func (x *exec) dataOut(n int) ([]byte, *senseError) {
	x.wanted = n
	if len(x.cmd.DataOut) < n {
		return nil, newSense(SenseIllegalRequest, ASCInvalidFieldInCmdIU)
	}
	return x.cmd.DataOut[:n], nil
}

// writeData claims the n data-out bytes of a WRITE or WRITE AND VERIFY. When the initiator sent fewer
// (iSCSI Expected Data Transfer Length below the CDB's transfer length), FCP-4 9.4.2 and libiscsi's
// residual tests want the command processed normally up to the data that did arrive: whole blocks are
// written, the rest is the transport's overflow residual. A partial block cannot be written, so that
// case is refused with INVALID FIELD IN COMMAND INFORMATION UNIT and nothing is written.
func (x *exec) writeData(n int) ([]byte, *senseError) {
	x.wanted = n
	d := x.cmd.DataOut
	if len(d) >= n {
		return d[:n], nil
	}
	if len(d)%x.lu.bs != 0 {
		return nil, newSense(SenseIllegalRequest, ASCInvalidFieldInCmdIU)
	}
	return d, nil
}

// dataOutExact is dataOut for commands whose data-out size the CDB fixes exactly (WRITE SAME, COMPARE AND
// WRITE): more bytes than asked is as wrong as fewer, since the initiator and target disagree about what
// the data means (libiscsi's *_invalid_dataout_size tests expect the command to fail either way).
func (x *exec) dataOutExact(n int) ([]byte, *senseError) {
	x.wanted = n
	if len(x.cmd.DataOut) != n {
		return nil, newSense(SenseIllegalRequest, ASCInvalidFieldInCmdIU)
	}
	return x.cmd.DataOut, nil
}

// ioError turns a device error into sense data.
func ioError(err error, write bool) *senseError {
	switch {
	case errors.Is(err, block.ErrReadOnly):
		return writeProtected()
	case errors.Is(err, block.ErrOutOfRange):
		return lbaOutOfRange()
	case write:
		return newSense(SenseMediumError, ASCWriteError)
	default:
		return newSense(SenseMediumError, ASCUnrecoveredReadError)
	}
}

// write writes p at byte offset off, forcing unit access when fua is set or the write cache is off.
func (x *exec) write(p []byte, off int64, fua bool) error { return x.lu.write(p, off, fua) }

func (l *lu) write(p []byte, off int64, fua bool) error {
	if l.deallocated.Load() {
		l.deallocated.Store(false)
	}
	if fua || !l.wce.Load() {
		_, err := block.WriteFUA(l.dev, p, off)
		return err
	}
	_, err := l.dev.WriteAt(p, off)
	return err
}

func cmdRead(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	if s := x.checkTransfer(b); s != nil {
		return checkCondition(s)
	}
	if b.Blocks == 0 {
		return Result{}
	}
	n := int(b.Blocks) * x.lu.bs
	p := getPooled(n) // never nil: n <= maxTransferBytes
	// FUA on READ asks for data from the medium, not a volatile cache: the backends' reads always see the
	// latest write, and there is no cache of our own to bypass.
	if _, err := x.lu.dev.ReadAt(p.buf[:n], int64(b.LBA)*int64(x.lu.bs)); err != nil {
		p.put()
		return checkCondition(ioError(err, false))
	}
	return Result{DataIn: p.buf[:n], pooled: p}
}

// cmdWrite runs WRITE(6/10/12/16) and WRITE AND VERIFY(10/12/16).
func cmdWrite(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	verify := x.cdb[0] == 0x2e || x.cdb[0] == 0xae || x.cdb[0] == 0x8e
	if s := x.writable(); s != nil {
		return checkCondition(s)
	}
	if s := x.checkTransfer(b); s != nil {
		return checkCondition(s)
	}
	n := int(b.Blocks) * x.lu.bs
	data, s := x.writeData(n)
	if s != nil {
		return checkCondition(s)
	}
	n = len(data)
	if n == 0 {
		return Result{}
	}
	off := int64(b.LBA) * int64(x.lu.bs)
	held := x.lu.locks.lock(x.lu.locks.mask(b.LBA, uint64(n/x.lu.bs)), false)
	// WRITE AND VERIFY writes through to the medium and reads back what it wrote.
	err := x.write(data, off, b.Flags&flagFUA != 0 || verify)
	held.unlock()
	if err != nil {
		return checkCondition(ioError(err, true))
	}
	if verify {
		return x.compareMediumN(data, off, len(data), false)
	}
	return Result{}
}

// compareMediumN reads total bytes at off, in chunks, and compares them with want (or, when repeat is
// set, every block with the single block want). It reports MISCOMPARE with the data-out offset of the
// first differing byte.
func (x *exec) compareMediumN(want []byte, off int64, total int, repeat bool) Result {
	buf, rel := getBuf(min(total, chunkBytes))
	if rel != nil {
		defer rel()
	}
	for done := 0; done < total; {
		if x.stopped() {
			return Result{Aborted: true}
		}
		n := min(total-done, chunkBytes)
		if _, err := x.lu.dev.ReadAt(buf[:n], off+int64(done)); err != nil {
			return checkCondition(ioError(err, false))
		}
		if !repeat {
			if i := mismatch(buf[:n], want[done:done+n]); i >= 0 {
				return checkCondition(miscompare(uint64(done + i)))
			}
		} else {
			bs := len(want)
			for j := 0; j < n; j += bs {
				if i := mismatch(buf[j:j+bs], want); i >= 0 {
					// BYTCHK 11b: the offset is into the single data-out block (SBC-3 5.29).
					return checkCondition(miscompare(uint64(i)))
				}
			}
		}
		done += n
	}
	return Result{}
}

// mismatch returns the index of the first byte where a and b differ, or -1.
func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// cmdVerify runs VERIFY(10/12/16). BYTCHK 00b checks the blocks are readable, 01b compares them with the
// data-out, 11b compares every block with the one data-out block; 10b is reserved.
func cmdVerify(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	bytchk := (b.Flags & flagBytchk) >> 1
	if bytchk == 2 {
		return checkCondition(invalidCDB(1, 2))
	}
	if s := x.checkTransfer(b); s != nil {
		return checkCondition(s)
	}
	n := int(b.Blocks) * x.lu.bs
	off := int64(b.LBA) * int64(x.lu.bs)
	switch bytchk {
	case 0:
		return x.verifyReadable(off, n)
	case 1:
		data, s := x.dataOut(n)
		if s != nil {
			return checkCondition(s)
		}
		return x.compareMediumN(data, off, n, false)
	default:
		if n == 0 {
			x.wanted = 0
			return Result{}
		}
		data, s := x.dataOut(x.lu.bs)
		if s != nil {
			return checkCondition(s)
		}
		return x.compareMediumN(data, off, n, true)
	}
}

// verifyReadable reads n bytes at off in chunks and discards them.
func (x *exec) verifyReadable(off int64, n int) Result {
	buf, rel := getBuf(min(n, chunkBytes))
	if rel != nil {
		defer rel()
	}
	for done := 0; done < n; {
		if x.stopped() {
			return Result{Aborted: true}
		}
		c := min(n-done, chunkBytes)
		if _, err := x.lu.dev.ReadAt(buf[:c], off+int64(done)); err != nil {
			return checkCondition(ioError(err, false))
		}
		done += c
	}
	return Result{}
}

// cmdCompareAndWrite runs COMPARE AND WRITE (SBC-3 5.2): atomically against every other writer of the
// range, read the blocks, compare them with the first half of the data-out, and if equal write the second.
func cmdCompareAndWrite(x *exec) Result {
	b, _ := DecodeCompareAndWrite(x.cdb)
	if s := x.writable(); s != nil {
		return checkCondition(s)
	}
	if s := x.checkRange(b.LBA, uint64(b.Blocks)); s != nil {
		return checkCondition(s)
	}
	if b.Blocks > maxCompareAndWrite {
		return checkCondition(invalidCDB(b.LengthField, -1))
	}
	n := int(b.Blocks) * x.lu.bs
	x.wanted = 2 * n
	if len(x.cmd.DataOut) != 2*n {
		// The NUMBER OF LOGICAL BLOCKS field and the data disagree (libiscsi encodes 256 blocks as 0 and
		// expects this): the CDB field is what is wrong.
		return checkCondition(invalidCDB(b.LengthField, -1))
	}
	data := x.cmd.DataOut
	if n == 0 {
		return Result{}
	}
	off := int64(b.LBA) * int64(x.lu.bs)
	held := x.lu.locks.lock(x.lu.locks.mask(b.LBA, uint64(b.Blocks)), true)
	defer held.unlock()
	cur, rel := getBuf(n)
	if rel != nil {
		defer rel()
	}
	if _, err := x.lu.dev.ReadAt(cur, off); err != nil {
		return checkCondition(ioError(err, false))
	}
	if i := mismatch(cur, data[:n]); i >= 0 {
		return checkCondition(miscompare(uint64(i)))
	}
	if err := x.write(data[n:], off, b.Flags&flagFUA != 0); err != nil {
		return checkCondition(ioError(err, true))
	}
	return Result{}
}

// cmdOrWrite runs ORWRITE(16) (SBC-3 5.8): the blocks become (old OR data-out), atomically like COMPARE
// AND WRITE.
func cmdOrWrite(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	if s := x.writable(); s != nil {
		return checkCondition(s)
	}
	if s := x.checkTransfer(b); s != nil {
		return checkCondition(s)
	}
	n := int(b.Blocks) * x.lu.bs
	data, s := x.dataOut(n)
	if s != nil {
		return checkCondition(s)
	}
	if n == 0 {
		return Result{}
	}
	off := int64(b.LBA) * int64(x.lu.bs)
	held := x.lu.locks.lock(x.lu.locks.mask(b.LBA, uint64(b.Blocks)), true)
	defer held.unlock()
	cur, rel := getBuf(n)
	if rel != nil {
		defer rel()
	}
	if _, err := x.lu.dev.ReadAt(cur, off); err != nil {
		return checkCondition(ioError(err, false))
	}
	for i := range cur {
		cur[i] |= data[i]
	}
	if err := x.write(cur, off, b.Flags&flagFUA != 0); err != nil {
		return checkCondition(ioError(err, true))
	}
	return Result{}
}

// cmdSyncCache runs SYNCHRONIZE CACHE(10/16). The backends flush whole devices, so the range is only
// validated. IMMED is honoured by completing before the status, which SBC-3 permits.
func cmdSyncCache(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	if s := x.checkRange(b.LBA, uint64(b.Blocks)); s != nil {
		return checkCondition(s)
	}
	if err := x.lu.dev.Flush(); err != nil {
		return checkCondition(newSense(SenseMediumError, ASCWriteError))
	}
	return Result{}
}

// cmdPrefetch runs PRE-FETCH(10/16): nothing to load (reads go to the backend), and the "cache" can hold
// every block, so CONDITION MET (SBC-3 5.9).
func cmdPrefetch(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	if s := x.checkRange(b.LBA, uint64(b.Blocks)); s != nil {
		return checkCondition(s)
	}
	return Result{Status: StatusConditionMet}
}

// cmdWriteSame runs WRITE SAME(10/16) (SBC-3 5.41, 5.42), with UNMAP and, for (16), NDOB.
func cmdWriteSame(x *exec) Result {
	b, _ := DecodeBlockCDB(x.cdb)
	ndob := x.cdb[0] == 0x93 && b.Flags&flagNDOB != 0
	unmap := b.Flags&flagUnmap != 0
	if s := x.writable(); s != nil {
		return checkCondition(s)
	}
	if b.Blocks == 0 { // WSNZ is set in the Block Limits page: zero does not mean "to the end"
		return checkCondition(invalidCDB(b.LengthField, -1))
	}
	if s := x.checkRange(b.LBA, uint64(b.Blocks)); s != nil {
		return checkCondition(s)
	}
	if b.Blocks > maxWriteSameBlocks {
		return checkCondition(invalidCDB(b.LengthField, -1))
	}
	bs := x.lu.bs
	var pattern []byte
	if ndob {
		x.wanted = 0
		pattern = make([]byte, bs) // NDOB: the data is zeros
	} else {
		p, s := x.dataOutExact(bs)
		if s != nil {
			return checkCondition(s)
		}
		pattern = p
	}
	off, total := int64(b.LBA)*int64(bs), int64(b.Blocks)*int64(bs)
	held := x.lu.locks.lock(x.lu.locks.mask(b.LBA, uint64(b.Blocks)), false)
	defer held.unlock()
	if unmap && allZero(pattern) {
		// Unmapped blocks read back as zeros (LBPRZ), so unmapping writes exactly the requested data.
		return x.lu.discard(off, total, x.stopped)
	}
	return x.lu.fill(off, total, pattern, false, x.stopped)
}

// fill writes pattern (one block) over [off, off+total) in chunks, checking stop in between.
func (l *lu) fill(off, total int64, pattern []byte, fua bool, stop func() bool) Result {
	buf, rel := getBuf(int(min(total, chunkBytes)))
	if rel != nil {
		defer rel()
	}
	for i := 0; i < len(buf); i += len(pattern) {
		copy(buf[i:], pattern)
	}
	for done := int64(0); done < total; {
		if stop() {
			return Result{Aborted: true}
		}
		n := min(total-done, int64(len(buf)))
		if err := l.write(buf[:n], off+done, fua); err != nil {
			return checkCondition(ioError(err, true))
		}
		done += n
	}
	return Result{}
}

// discard unmaps [off, off+total) in chunks, checking stop in between.
func (l *lu) discard(off, total int64, stop func() bool) Result {
	const chunk = 1 << 30
	for done := int64(0); done < total; {
		if stop() {
			return Result{Aborted: true}
		}
		n := min(total-done, chunk)
		if err := l.dev.Discard(off+done, n); err != nil {
			return checkCondition(ioError(err, true))
		}
		done += n
	}
	return Result{}
}

func allZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// UNMAP parameter list layout (SBC-3 5.28.2), offsets in bytes.
const (
	unmapOffDataLen   = 0 // UNMAP DATA LENGTH: bytes after this field
	unmapOffDescLen   = 2 // UNMAP BLOCK DESCRIPTOR DATA LENGTH
	unmapHeaderLen    = 8
	unmapDescLen      = 16 // descriptor: LBA (8), NUMBER OF LOGICAL BLOCKS (4), reserved (4)
	unmapDescOffCount = 8
)

// cmdUnmap runs UNMAP (SBC-3 5.28): every descriptor is validated before any block is unmapped.
func cmdUnmap(x *exec) Result {
	plen := int(binary.BigEndian.Uint16(x.cdb[7:]))
	if s := x.writable(); s != nil {
		return checkCondition(s)
	}
	if plen == 0 {
		return Result{}
	}
	if plen < unmapHeaderLen {
		x.wanted = plen
		return checkCondition(paramListLength())
	}
	p, s := x.dataOut(plen)
	if s != nil {
		return checkCondition(s)
	}
	descLen := int(binary.BigEndian.Uint16(p[unmapOffDescLen:]))
	if dataLen := int(binary.BigEndian.Uint16(p[unmapOffDataLen:])); dataLen < descLen+unmapHeaderLen-2 && dataLen != 0 {
		return checkCondition(invalidParam(unmapOffDataLen, -1))
	}
	if descLen > plen-unmapHeaderLen {
		return checkCondition(paramListLength())
	}
	nd := descLen / unmapDescLen
	if nd > maxUnmapDescs {
		return checkCondition(invalidParam(unmapOffDescLen, -1))
	}
	type extent struct{ lba, n uint64 }
	ext := make([]extent, 0, nd)
	for i := 0; i < nd; i++ {
		d := p[unmapHeaderLen+i*unmapDescLen:]
		lba := binary.BigEndian.Uint64(d)
		n := uint64(binary.BigEndian.Uint32(d[unmapDescOffCount:]))
		if s := x.checkRange(lba, n); s != nil {
			return checkCondition(s)
		}
		if n > maxUnmapBlocks {
			return checkCondition(invalidParam(unmapHeaderLen+i*unmapDescLen+unmapDescOffCount, -1))
		}
		ext = append(ext, extent{lba, n})
	}
	bs := int64(x.lu.bs)
	for _, e := range ext {
		if e.n == 0 {
			continue
		}
		held := x.lu.locks.lock(x.lu.locks.mask(e.lba, e.n), false)
		r := x.lu.discard(int64(e.lba)*bs, int64(e.n)*bs, x.stopped)
		held.unlock()
		if r.Status != StatusGood || r.Aborted {
			return r
		}
	}
	return Result{}
}

// GET LBA STATUS (SBC-3 5.6). The backends cannot tell mapped from deallocated blocks, so every block is
// reported mapped (provisioning status 0) except right after a SANITIZE BLOCK ERASE with no write since,
// which is true of what they store: a Memory page or file
// extent that was discarded reads as zeros but the interface gives no way to know whether it is held.
// A device implementing Provisioned reports precisely.
func cmdGetLBAStatus(x *exec) Result {
	lba := binary.BigEndian.Uint64(x.cdb[2:])
	alloc := binary.BigEndian.Uint32(x.cdb[10:])
	if lba >= x.lu.blocks {
		return checkCondition(lbaOutOfRange())
	}
	if alloc < 8 {
		// Too short to hold even the header: SBC-3 says the device server transfers what fits; none.
		return Result{}
	}
	bs := int64(x.lu.bs)
	n := x.lu.blocks - lba
	status := byte(0) // mapped
	if x.lu.deallocated.Load() {
		status = 1 // deallocated: a SANITIZE BLOCK ERASE discarded everything and nothing was written since
	} else if p, ok := x.lu.dev.(Provisioned); ok {
		mapped, run, err := p.Mapped(int64(lba)*bs, int64(n)*bs)
		if err != nil {
			return checkCondition(ioError(err, false))
		}
		if !mapped {
			status = 1 // deallocated
		}
		if run > 0 && uint64(run/bs) < n {
			n = uint64(run / bs)
		}
	}
	n = min(n, 0xffffffff)
	out := make([]byte, 8+16)
	binary.BigEndian.PutUint32(out[0:], uint32(len(out)-4))
	binary.BigEndian.PutUint64(out[8:], lba)
	binary.BigEndian.PutUint32(out[16:], uint32(n))
	out[20] = status
	return x.dataIn(out, alloc)
}

// Provisioned is implemented by devices that know which ranges hold data (thin files, RAID bitmaps).
// Mapped reports whether the range starting at off is mapped and how many bytes from off share that state
// (at most length).
type Provisioned interface {
	Mapped(off, length int64) (mapped bool, run int64, err error)
}
