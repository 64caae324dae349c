package md

import (
	"bytes"
	"testing"
)

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to a superblock that decodes equal.
func FuzzDecode(f *testing.F) {
	for _, bs := range []int{512, 4096} {
		b, err := Encode(sample(), bs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	s := sample()
	s.DevRoles = s.DevRoles[:3]
	s.FeatureMap |= FeatureRecoveryOffset | FeatureRAID0Layout
	s.RecoveryOffset = 77
	b, _ := Encode(s, 512)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		_ = s.Validate()
		out, err := Encode(s, 512)
		if err != nil {
			t.Fatalf("decoded superblock does not encode: %v", err)
		}
		d, err := Decode(out)
		if err != nil {
			t.Fatalf("re-encoded superblock does not decode: %v", err)
		}
		if !equal(s, d) {
			t.Fatalf("round trip differs:\n%+v\n%+v", s, d)
		}
	})
}

func FuzzDecodeBitmap(f *testing.F) {
	bm := &BitmapSuper{Version: BitmapVersion, SyncSize: 4096, ChunkSize: 1 << 26}
	b, _ := EncodeBitmap(bm)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		bm, err := DecodeBitmap(b)
		if err != nil {
			return
		}
		out, err := EncodeBitmap(bm)
		if err != nil {
			t.Fatal(err)
		}
		d, err := DecodeBitmap(out)
		if err != nil || *d != *bm {
			t.Fatalf("round trip: %v %+v %+v", err, d, bm)
		}
		if !bytes.Equal(out[:4], []byte("bitm")) {
			t.Fatal("magic")
		}
	})
}
