// Package layout maps array chunks to member chunks for md's data layouts: RAID0, RAID1, RAID10 near-2 and
// RAID5/RAID6 left-symmetric (drivers/md/raid0.c, raid10.c raid10_find_phys, raid5.c raid5_compute_sector).
//
// Everything counts in chunks: an array chunk number c, a member index (the md role, 0..n-1) and a row,
// the chunk index on the member from its data offset. Byte and sector arithmetic is the caller's.
package layout

// RAID0 places array chunk c of an n-member RAID0 (equal members).
func RAID0(c int64, n int) (member int, row int64) {
	return int(c % int64(n)), c / int64(n)
}

// RAID10Near2 places copy j (0 or 1) of array chunk c of an n-member RAID10 with layout n2: copies of a
// chunk sit side by side, x = 2c + j counts chunk slots across members row after row (odd n works).
func RAID10Near2(c int64, n int, j int) (member int, row int64) {
	x := 2*c + int64(j)
	return int(x % int64(n)), x / int64(n)
}

// RAID10Near2Chunks is the number of array chunks of an n-member near-2 array with rows chunks per member.
func RAID10Near2Chunks(rows int64, n int) int64 { return rows * int64(n) / 2 }

// Stripe locates array chunk c of a parity array with dataDisks data members per stripe: the stripe (row on
// every member) and the data index k within it.
func Stripe(c int64, dataDisks int) (stripe int64, k int) {
	return c / int64(dataDisks), int(c % int64(dataDisks))
}

// RAID5 returns, for stripe s of an n-member left-symmetric RAID5, the parity member and the member holding
// data index k: parity rotates backwards from the last member, data follows the parity member round.
func RAID5(s int64, n int, k int) (parity, data int) {
	pd := n - 1 - int(s%int64(n))
	return pd, (pd + 1 + k) % n
}

// RAID5Parity is the parity member of stripe s.
func RAID5Parity(s int64, n int) int { return n - 1 - int(s%int64(n)) }

// RAID6 returns, for stripe s of an n-member left-symmetric RAID6, the P and Q members and the member
// holding data index k (the index that weights it by g^k in Q).
func RAID6(s int64, n int, k int) (p, q, data int) {
	pd := n - 1 - int(s%int64(n))
	return pd, (pd + 1) % n, (pd + 2 + k) % n
}

// DataIndex is the inverse: which data index member m holds in stripe s of an n-member array with the
// given parity count (1 for RAID5, 2 for RAID6), or -1 for a parity member (-1 P, -2 Q).
func DataIndex(s int64, n, parity int, m int) int {
	pd := n - 1 - int(s%int64(n))
	off := (m - pd + n) % n // 0 = P, 1 = Q on RAID6
	switch {
	case off == 0:
		return -1
	case parity == 2 && off == 1:
		return -2
	}
	return off - parity
}
