// Package md reads and writes Linux md's on-disk metadata: the v1.2 superblock (struct mdp_superblock_1 of
// include/uapi/linux/raid/md_p.h) and the internal write-intent bitmap superblock (bitmap_super_t of
// drivers/md/md-bitmap.h), byte for byte, so that arrays made by this engine assemble under stock Linux md
// and arrays made by mdadm assemble here.
//
// Both structures are typed byte arrays with one accessor per field at the offset the kernel header gives
// (archive/tar style); Decode and Encode convert them to plain Go structs. Everything here is pure: no I/O.
// All integers are little-endian. Sizes and offsets in superblock fields are in 512-byte sectors whatever
// the member's logical block size, as in md.
package md
