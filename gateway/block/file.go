package block

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileOptions say how OpenFile opens a backing file or block device.
type FileOptions struct {
	// ReadOnly opens the file read-only; writes fail with ErrReadOnly.
	ReadOnly bool
	// Direct opens with O_DIRECT, bypassing the page cache (block devices, and files on filesystems that
	// support it; tmpfs does not). Unaligned caller buffers are bounced through aligned ones.
	Direct bool
	// LogicalBlockSize is 512 or 4096; 0 means the device's own for block devices and 512 for files.
	LogicalBlockSize int
}

// File is a Device backed by a regular file or a block device. pread/pwrite make it safe for concurrent use
// without a lock.
type File struct {
	f      *os.File
	path   string
	size   int64
	bs     int
	opts   FileOptions
	isBlk  bool
	bounce sync.Pool // aligned buffers for O_DIRECT, *[]byte
}

// directAlign is the memory and offset alignment O_DIRECT needs, in bytes (the largest logical block size).
const directAlign = 4096

// OpenFile opens path as a block device. Its size is the file's size (or the device's capacity) rounded
// down to the logical block size.
func OpenFile(path string, opts FileOptions) (*File, error) {
	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, &OpError{Op: "open", Device: path, Err: err}
	}
	d := &File{f: f, path: path, opts: opts}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &OpError{Op: "open", Device: path, Err: err}
	}
	bs := opts.LogicalBlockSize
	switch {
	case st.Mode().IsRegular():
		d.size = st.Size()
		if bs == 0 {
			bs = 512
		}
	case st.Mode()&os.ModeDevice != 0:
		d.isBlk = true
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
			f.Close()
			return nil, &OpError{Op: "open", Device: path, Err: fmt.Errorf("BLKGETSIZE64: %w", e)}
		}
		d.size = int64(sz)
		if bs == 0 {
			ssz, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
			if err != nil {
				f.Close()
				return nil, &OpError{Op: "open", Device: path, Err: fmt.Errorf("BLKSSZGET: %w", err)}
			}
			bs = ssz
		}
	default:
		f.Close()
		return nil, &OpError{Op: "open", Device: path, Err: errors.New("not a regular file or block device")}
	}
	if !ValidBlockSize(bs) {
		f.Close()
		return nil, &OpError{Op: "open", Device: path, Err: fmt.Errorf("logical block size %d: want 512 or 4096", bs)}
	}
	d.bs = bs
	d.size -= d.size % int64(bs)
	if d.size == 0 {
		f.Close()
		return nil, &OpError{Op: "open", Device: path, Err: fmt.Errorf("smaller than one %d-byte block", bs)}
	}
	return d, nil
}

func (d *File) Size() int64           { return d.size }
func (d *File) LogicalBlockSize() int { return d.bs }
func (d *File) Close() error          { return d.f.Close() }

// ReadAt reads len(p) bytes at byte offset off.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(off, len(p)); err != nil {
		return 0, &OpError{Op: "read", Device: d.path, Offset: off, Length: int64(len(p)), Err: err}
	}
	if d.opts.Direct && !aligned(p) {
		b := d.getBounce(len(p))
		defer d.putBounce(b)
		n, err := d.f.ReadAt((*b)[:len(p)], off)
		copy(p, (*b)[:n])
		return n, d.wrap("read", off, len(p), err)
	}
	n, err := d.f.ReadAt(p, off)
	return n, d.wrap("read", off, len(p), err)
}

// WriteAt writes p at byte offset off.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.opts.ReadOnly {
		return 0, &OpError{Op: "write", Device: d.path, Offset: off, Length: int64(len(p)), Err: ErrReadOnly}
	}
	if err := d.check(off, len(p)); err != nil {
		return 0, &OpError{Op: "write", Device: d.path, Offset: off, Length: int64(len(p)), Err: err}
	}
	if d.opts.Direct && !aligned(p) {
		b := d.getBounce(len(p))
		defer d.putBounce(b)
		copy(*b, p)
		n, err := d.f.WriteAt((*b)[:len(p)], off)
		return n, d.wrap("write", off, len(p), err)
	}
	n, err := d.f.WriteAt(p, off)
	return n, d.wrap("write", off, len(p), err)
}

// Flush makes completed writes durable with fdatasync.
func (d *File) Flush() error {
	if d.opts.ReadOnly {
		return nil
	}
	return d.wrap("flush", 0, 0, unix.Fdatasync(int(d.f.Fd())))
}

// Discard punches a hole (files) or zeroes with unmap (block devices) over [off, off+length). Where the
// filesystem or device cannot, it writes zeros, so the range always reads back as zeros.
func (d *File) Discard(off, length int64) error {
	if d.opts.ReadOnly {
		return &OpError{Op: "discard", Device: d.path, Offset: off, Length: length, Err: ErrReadOnly}
	}
	if off < 0 || length < 0 || off > d.size || length > d.size-off {
		return &OpError{Op: "discard", Device: d.path, Offset: off, Length: length, Err: ErrOutOfRange}
	}
	if length == 0 {
		return nil
	}
	err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return d.wrap("discard", off, int(length), err)
	}
	zeros := d.getBounce(1 << 20)
	defer d.putBounce(zeros)
	clear(*zeros)
	for done := int64(0); done < length; {
		n := min(length-done, int64(len(*zeros)))
		if _, err := d.f.WriteAt((*zeros)[:n], off+done); err != nil {
			return d.wrap("discard", off+done, int(n), err)
		}
		done += n
	}
	return nil
}

func (d *File) check(off int64, n int) error {
	if off < 0 || off > d.size || int64(n) > d.size-off {
		return ErrOutOfRange
	}
	if d.opts.Direct && (off%int64(d.bs) != 0 || n%d.bs != 0) {
		return ErrUnaligned
	}
	return nil
}

func (d *File) wrap(op string, off int64, n int, err error) error {
	if err == nil {
		return nil
	}
	return &OpError{Op: op, Device: d.path, Offset: off, Length: int64(n), Err: err}
}

func aligned(p []byte) bool {
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

func (d *File) getBounce(n int) *[]byte {
	if v, ok := d.bounce.Get().(*[]byte); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	b := AlignedBuffer(n)
	return &b
}

func (d *File) putBounce(b *[]byte) { d.bounce.Put(b) }

// AlignedBuffer returns a zeroed buffer of n bytes whose first byte is 4096-byte aligned, as O_DIRECT needs.
func AlignedBuffer(n int) []byte {
	raw := make([]byte, n+directAlign)
	shift := (directAlign - int(uintptr(unsafe.Pointer(&raw[0]))%directAlign)) % directAlign
	return raw[shift : shift+n : shift+n]
}
