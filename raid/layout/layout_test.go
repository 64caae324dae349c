package layout

import "testing"

// The tables below are md's placements written out by hand for small arrays (the notes' formulas, read
// row by row), so a change of formula cannot pass by agreeing with itself.

func TestRAID5LeftSymmetric4(t *testing.T) {
	// 4 members: stripe 0 = D0 D1 D2 P, 1 = D1 D2 P D0, 2 = D2 P D0 D1, 3 = P D0 D1 D2.
	want := [][4]string{{"D0", "D1", "D2", "P"}, {"D1", "D2", "P", "D0"}, {"D2", "P", "D0", "D1"}, {"P", "D0", "D1", "D2"}}
	for s := range int64(8) {
		var got [4]string
		p, _ := RAID5(s, 4, 0)
		got[p] = "P"
		for k := range 3 {
			_, m := RAID5(s, 4, k)
			got[m] = "D" + string(rune('0'+k))
			if DataIndex(s, 4, 1, m) != k {
				t.Fatalf("DataIndex(%d, member %d) = %d, want %d", s, m, DataIndex(s, 4, 1, m), k)
			}
		}
		if DataIndex(s, 4, 1, p) != -1 || RAID5Parity(s, 4) != p {
			t.Fatal("parity index")
		}
		if got != want[s%4] {
			t.Fatalf("stripe %d: %v, want %v", s, got, want[s%4])
		}
	}
}

func TestRAID6LeftSymmetric5(t *testing.T) {
	// 5 members, stripe 0: P on member 4, Q on (4+1) mod 5 = 0, data from member 1 on.
	want := [][5]string{
		{"Q", "D0", "D1", "D2", "P"},
		{"D0", "D1", "D2", "P", "Q"},
		{"D1", "D2", "P", "Q", "D0"},
		{"D2", "P", "Q", "D0", "D1"},
		{"P", "Q", "D0", "D1", "D2"},
	}
	for s := range int64(10) {
		var got [5]string
		for k := range 3 {
			p, q, m := RAID6(s, 5, k)
			got[p], got[q] = "P", "Q"
			got[m] = "D" + string(rune('0'+k))
			if DataIndex(s, 5, 2, m) != k || DataIndex(s, 5, 2, p) != -1 || DataIndex(s, 5, 2, q) != -2 {
				t.Fatal("DataIndex disagrees with RAID6")
			}
		}
		if got != want[s%5] {
			t.Fatalf("stripe %d: %v, want %v", s, got, want[s%5])
		}
	}
}

func TestRAID10Near2(t *testing.T) {
	// 3 members: row 0 = A A B, row 1 = B C C, row 2 = D D E ...
	type pos struct {
		m   int
		row int64
	}
	want := map[int64][2]pos{0: {{0, 0}, {1, 0}}, 1: {{2, 0}, {0, 1}}, 2: {{1, 1}, {2, 1}}, 3: {{0, 2}, {1, 2}}}
	for c, w := range want {
		for j := range 2 {
			m, r := RAID10Near2(c, 3, j)
			if (pos{m, r}) != w[j] {
				t.Fatalf("chunk %d copy %d at %v, want %v", c, j, pos{m, r}, w[j])
			}
		}
	}
	// 4 members: plain mirrored pairs (0,1) and (2,3).
	for c := range int64(10) {
		m0, r0 := RAID10Near2(c, 4, 0)
		m1, r1 := RAID10Near2(c, 4, 1)
		if m0 != int(c%2)*2 || m1 != m0+1 || r0 != c/2 || r1 != r0 {
			t.Fatalf("chunk %d: %d/%d %d/%d", c, m0, r0, m1, r1)
		}
	}
	if RAID10Near2Chunks(5, 3) != 7 {
		t.Fatal("chunks of 3 members x 5 rows")
	}
}

func TestRAID0AndStripe(t *testing.T) {
	for c := range int64(12) {
		m, r := RAID0(c, 3)
		if m != int(c%3) || r != c/3 {
			t.Fatal("raid0")
		}
	}
	if s, k := Stripe(7, 3); s != 2 || k != 1 {
		t.Fatal("stripe")
	}
}
