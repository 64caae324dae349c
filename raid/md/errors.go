package md

import (
	"errors"
	"fmt"
)

// Sentinel errors. Decoders wrap them in a *FieldError naming the field and its offset.
var (
	ErrShort       = errors.New("buffer too short")
	ErrMagic       = errors.New("bad magic")
	ErrVersion     = errors.New("unsupported version")
	ErrChecksum    = errors.New("checksum mismatch")
	ErrUnsupported = errors.New("feature not supported by this engine")
	ErrInvalid     = errors.New("invalid value")
)

// FieldError reports a bad field of an on-disk structure.
type FieldError struct {
	Struct string // "superblock" or "bitmap"
	Field  string // the kernel's field name, e.g. "feature_map"
	Offset int    // byte offset of the field inside the structure
	Detail string // what was found, e.g. "bit 4 (reshape active)"
	Err    error  // one of the sentinels above
}

func (e *FieldError) Error() string {
	s := fmt.Sprintf("md %s: field %s at offset %#03x: %v", e.Struct, e.Field, e.Offset, e.Err)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *FieldError) Unwrap() error { return e.Err }

// checker accumulates the first error of a series of field checks (a sticky error), so decoders check many
// fields and test one error at the end.
type checker struct {
	structName string
	err        error
}

// want records a FieldError unless ok holds (or an earlier check failed).
func (c *checker) want(ok bool, field string, off int, err error, format string, args ...any) {
	if ok || c.err != nil {
		return
	}
	c.err = &FieldError{Struct: c.structName, Field: field, Offset: off, Detail: fmt.Sprintf(format, args...), Err: err}
}
