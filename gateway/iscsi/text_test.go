package iscsi

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseText(t *testing.T) {
	cases := []struct {
		in   string
		want []KV
		err  error
	}{
		{"A=1\x00B=two\x00", []KV{{"A", "1"}, {"B", "two"}}, nil},
		{"A=1\x00\x00\x00\x00", []KV{{"A", "1"}}, nil}, // padding
		{"A=\x00", []KV{{"A", ""}}, nil},
		{"A=b=c\x00", []KV{{"A", "b=c"}}, nil},
		{"X-com.example.Key=v\x00", []KV{{"X-com.example.Key", "v"}}, nil},
		{"A=1", []KV{{"A", "1"}}, nil}, // last pair without NUL
		{"novalue\x00", nil, ErrTextSyntax},
		{"=v\x00", nil, ErrTextSyntax},
		{"bad key=v\x00", nil, ErrTextSyntax},
		{strings.Repeat("K", 64) + "=v\x00", nil, ErrTextSyntax},
		{strings.Repeat("x", MaxTextLen+1), nil, ErrTextTooLong},
	}
	for _, c := range cases {
		got, err := ParseText([]byte(c.in))
		if !errors.Is(err, c.err) {
			t.Errorf("%q: err %v, want %v", c.in, err, c.err)
			continue
		}
		if c.err == nil && !equalKVs(got, c.want) {
			t.Errorf("%q: %v, want %v", c.in, got, c.want)
		}
	}
}

func equalKVs(a, b []KV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNumbersAndBinary(t *testing.T) {
	for s, want := range map[string]uint64{"0": 0, "8192": 8192, "0x2000": 8192, "0X10": 16} {
		if v, err := parseNumber(s); err != nil || v != want {
			t.Errorf("parseNumber(%q) = %d, %v", s, v, err)
		}
	}
	for _, s := range []string{"", "-1", "012", "1e3", "0x", "18446744073709551616"} {
		if _, err := parseNumber(s); err == nil {
			t.Errorf("parseNumber(%q) accepted", s)
		}
	}
	for s, want := range map[string][]byte{"0x0102ff": {1, 2, 0xff}, "0x102": {1, 2}, "0bAQL/": {1, 2, 0xff}, "0bAQI": {1, 2}} {
		if v, err := parseBinary(s); err != nil || !bytes.Equal(v, want) {
			t.Errorf("parseBinary(%q) = %x, %v", s, v, err)
		}
	}
	for _, s := range []string{"", "0x", "12", "0xzz", "0b!!"} {
		if _, err := parseBinary(s); err == nil {
			t.Errorf("parseBinary(%q) accepted", s)
		}
	}
}

// FuzzParseText checks that ParseText never panics and that what it accepts re-encodes to pairs that
// parse back identically.
func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.1994-05.com.redhat:x\x00SessionType=Normal\x00"))
	f.Add([]byte("AuthMethod=CHAP,None\x00\x00\x00"))
	f.Add([]byte("CHAP_C=0xdeadbeef\x00CHAP_I=7\x00"))
	f.Add([]byte("=\x00\x00a"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := ParseText(b)
		if err != nil {
			return
		}
		again, err := ParseText(AppendText(nil, kvs...))
		if err != nil || !equalKVs(kvs, again) {
			t.Fatalf("re-encoded text parses differently: %v", err)
		}
	})
}
