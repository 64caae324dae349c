package guest

import (
	"fmt"
	"io"
	"io/fs"
)

// The "newc" cpio format (the one the kernel's initramfs unpacker reads, see the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst): every entry is a 110-byte ASCII header,
// the NUL-terminated name padded to a multiple of 4 bytes, then the data padded to a multiple of 4 bytes.
// The archive ends with an entry named "TRAILER!!!".
//
// Header layout, byte offsets; every numeric field is 8 hexadecimal digits:
//
//	0   c_magic     "070701" (6 bytes)
//	6   c_ino
//	14  c_mode      file type and permission bits, as in stat(2)
//	22  c_uid
//	30  c_gid
//	38  c_nlink
//	46  c_mtime     seconds since the epoch
//	54  c_filesize  bytes of data (for a symlink: the length of its target)
//	62  c_devmajor
//	70  c_devminor
//	78  c_rdevmajor
//	86  c_rdevminor
//	94  c_namesize  bytes of the name including its NUL
//	102 c_check     0 (no checksum)
//	110 name
const (
	cpioMagic      = "070701"
	cpioHeaderSize = 110
	cpioTrailer    = "TRAILER!!!"
)

// Mode bits for c_mode (octal, as in stat(2)).
const (
	cpioModeDir     = 0o040000
	cpioModeRegular = 0o100000
	cpioModeSymlink = 0o120000
	cpioModeChar    = 0o020000
)

// cpioWriter writes a newc archive. Every entry is owned by root with mtime 0, so the same tree always
// gives the same bytes (the cache key does not have to cover timestamps).
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	off  int64 // bytes written, for padding
	err  error
	done bool
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w} }

func (c *cpioWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.off += int64(n)
	c.err = err
}

// pad writes NULs up to the next multiple of 4 bytes.
func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// cpioHeader returns the 110-byte header of an entry.
func cpioHeader(ino, mode, nlink, filesize, rdevMajor, rdevMinor, namesize uint32) []byte {
	h := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		cpioMagic, ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdevMajor, rdevMinor, namesize, 0)
	return []byte(h)
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte, rdevMajor, rdevMinor uint32) error {
	if c.done {
		return fmt.Errorf("cpio: entry %q after the trailer", name)
	}
	if len(name) == 0 || name[0] == '/' {
		return fmt.Errorf("cpio: entry name %q must be relative and not empty", name)
	}
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s: %d bytes do not fit the 32-bit c_filesize field", name, len(data))
	}
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == cpioModeDir {
		nlink = 2
	}
	c.write(cpioHeader(c.ino, mode, nlink, uint32(len(data)), rdevMajor, rdevMinor, uint32(len(name)+1)))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
	return c.err
}

// Dir adds a directory with permission bits perm.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) error {
	return c.entry(name, cpioModeDir|uint32(perm.Perm()), nil, 0, 0)
}

// File adds a regular file.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	return c.entry(name, cpioModeRegular|uint32(perm.Perm()), data, 0, 0)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	return c.entry(name, cpioModeSymlink|0o777, []byte(target), 0, 0)
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return c.entry(name, cpioModeChar|uint32(perm.Perm()), nil, major, minor)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	if c.done {
		return c.err
	}
	err := c.entry(cpioTrailer, 0, nil, 0, 0)
	c.done = true
	return err
}
