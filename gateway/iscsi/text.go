package iscsi

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Text limits (RFC 7143 6.1): key names are at most 63 bytes; values at most 255 bytes unless the key
// allows more (TargetAddress, SendTargets, CHAP values); a login or text PDU series carries at most
// MaxTextLen bytes of keys in one direction, as an initiator-controlled bound.
const (
	MaxKeyNameLen   = 63
	MaxValueLen     = 255
	MaxLongValueLen = 8192
	MaxTextLen      = 8192
)

// KV is one key=value pair, in the order it appeared.
type KV struct {
	Key, Value string
}

// Errors from ParseText.
var (
	ErrTextSyntax  = errors.New("iscsi: malformed key=value text")
	ErrTextTooLong = errors.New("iscsi: text exceeds its length limit")
)

// ParseText decodes NUL-terminated key=value pairs (RFC 7143 6.1). Trailing NUL bytes (padding) are
// ignored. Key names must use the RFC's character set; values are not interpreted here.
func ParseText(b []byte) ([]KV, error) {
	if len(b) > MaxTextLen {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTextTooLong, len(b), MaxTextLen)
	}
	var kvs []KV
	off := 0
	for off < len(b) {
		end := off
		for end < len(b) && b[end] != 0 {
			end++
		}
		if end == off { // empty string between NULs: padding or a stray NUL
			off++
			continue
		}
		pair := string(b[off:end])
		eq := strings.IndexByte(pair, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: no '=' in pair at byte %d", ErrTextSyntax, off)
		}
		k, v := pair[:eq], pair[eq+1:]
		if err := checkKeyName(k); err != nil {
			return nil, fmt.Errorf("%w at byte %d", err, off)
		}
		if len(v) > MaxLongValueLen {
			return nil, fmt.Errorf("%w: value of %q is %d bytes at byte %d", ErrTextTooLong, k, len(v), off)
		}
		kvs = append(kvs, KV{k, v})
		off = end + 1
	}
	return kvs, nil
}

func checkKeyName(k string) error {
	if len(k) == 0 || len(k) > MaxKeyNameLen {
		return fmt.Errorf("%w: key name length %d", ErrTextSyntax, len(k))
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '+', c == '@', c == '_', c == '#':
		default:
			return fmt.Errorf("%w: byte 0x%02x in key name %q", ErrTextSyntax, c, k)
		}
	}
	return nil
}

// AppendText encodes pairs as key=value\0.
func AppendText(b []byte, kvs ...KV) []byte {
	for _, kv := range kvs {
		b = append(b, kv.Key...)
		b = append(b, '=')
		b = append(b, kv.Value...)
		b = append(b, 0)
	}
	return b
}

// parseNumber decodes a numerical value: decimal, or hex with 0x (RFC 7143 5.1).
func parseNumber(s string) (uint64, error) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		return strconv.ParseUint(s[2:], 16, 64)
	}
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return strconv.ParseUint(s, 10, 64)
}

// parseBinary decodes a binary value: 0x followed by hex, or 0b followed by base64 (RFC 7143 5.1).
func parseBinary(s string) ([]byte, error) {
	if len(s) < 3 {
		return nil, fmt.Errorf("binary value %q too short", s)
	}
	switch s[:2] {
	case "0x", "0X":
		h := s[2:]
		if len(h)%2 == 1 {
			h = "0" + h
		}
		return hex.DecodeString(h)
	case "0b", "0B":
		b, err := base64.StdEncoding.DecodeString(s[2:])
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(s[2:])
		}
		return b, err
	}
	return nil, fmt.Errorf("binary value %q lacks 0x or 0b", s)
}

func encodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }
