// Package block defines the one small interface every LUN, RAID array, volume and member disk implements:
// a fixed-size array of bytes addressed by byte offset, with flush and discard.
//
// Offsets and lengths are always in bytes. Callers that speak in blocks (SCSI LBAs, md sectors) convert at
// their own boundary; a Device only promises that I/O aligned to LogicalBlockSize is accepted.
package block

import (
	"errors"
	"fmt"
	"io"
)

// Device is a block device: a disk, a file, an array or a volume.
//
// ReadAt and WriteAt follow io.ReaderAt and io.WriterAt, and may be called concurrently from many
// goroutines on ranges that overlap or not; ordering between overlapping concurrent writes is the caller's
// business (SCSI leaves it undefined too). A write that returned is visible to every later read. It is
// durable only after a later Flush returned nil, or if it was written with WriteAtFUA.
type Device interface {
	io.ReaderAt
	io.WriterAt

	// Size is the capacity in bytes, a multiple of LogicalBlockSize.
	Size() int64
	// LogicalBlockSize is 512 or 4096 bytes.
	LogicalBlockSize() int
	// Flush makes every write that completed before the call durable (SYNCHRONIZE CACHE).
	Flush() error
	// Discard tells the device that [off, off+length) is unused. Afterwards the range reads back as zeros.
	Discard(off, length int64) error
	// Close releases the device. Close does not flush.
	Close() error
}

// FUAWriter is implemented by devices that can make a single write durable cheaper than a full Flush
// (RAID arrays flush only the members the write touched). WriteFUA falls back to WriteAt plus Flush.
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (n int, err error)
}

// WriteFUA writes p at off and returns only once those bytes are durable.
func WriteFUA(d Device, p []byte, off int64) (int, error) {
	if f, ok := d.(FUAWriter); ok {
		return f.WriteAtFUA(p, off)
	}
	n, err := d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, d.Flush()
}

// Errors common to every Device. Implementations wrap them in *OpError.
var (
	ErrOutOfRange = errors.New("block: I/O beyond the end of the device")
	ErrUnaligned  = errors.New("block: I/O not aligned to the logical block size")
	ErrClosed     = errors.New("block: device closed")
	ErrReadOnly   = errors.New("block: device is read-only")
)

// OpError describes a failed operation on a device: what, where and why.
type OpError struct {
	Op     string // "read", "write", "flush", "discard", "open"
	Device string // a path or array name
	Offset int64  // bytes
	Length int64  // bytes
	Err    error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("%s %s at byte %d (+%d): %v", e.Op, e.Device, e.Offset, e.Length, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// CheckRange validates an I/O of length bytes at off against a device of size bytes and block size bs.
// It returns ErrOutOfRange or ErrUnaligned, or nil.
func CheckRange(off, length, size int64, bs int) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return ErrOutOfRange
	}
	if off%int64(bs) != 0 || length%int64(bs) != 0 {
		return ErrUnaligned
	}
	return nil
}

// ValidBlockSize reports whether bs is a logical block size the product supports.
func ValidBlockSize(bs int) bool { return bs == 512 || bs == 4096 }
