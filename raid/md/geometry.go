package md

// Validate checks that the superblock describes an array this engine can run: a level and layout it
// implements, a sane chunk, member count and sizes. Decode only checks the format; Validate checks the
// meaning. Errors are *FieldError (ErrUnsupported for a level or layout we do not implement).
func (s *Superblock) Validate() error {
	c := checker{structName: "superblock"}
	minDisks := map[int32]uint32{LevelRAID0: 1, LevelRAID1: 1, LevelRAID5: 2, LevelRAID6: 4, LevelRAID10: 2}
	least, ok := minDisks[s.Level]
	c.want(ok, "level", 0x048, ErrUnsupported, "level %d; this engine runs raid0, 1, 5, 6 and 10", s.Level)
	switch s.Level {
	case LevelRAID5, LevelRAID6:
		c.want(s.Layout == LayoutLeftSymmetric, "layout", 0x04c, ErrUnsupported,
			"raid%d layout %d; only left-symmetric (2) is implemented", s.Level, s.Layout)
	case LevelRAID10:
		c.want(s.Layout == LayoutRAID10Near2, "layout", 0x04c, ErrUnsupported,
			"raid10 layout %#x; only near-2 (0x102) is implemented", s.Layout)
	}
	c.want(s.RaidDisks >= least, "raid_disks", 0x05c, ErrInvalid, "%d members, raid%d needs at least %d", s.RaidDisks, s.Level, least)
	c.want(int(s.RaidDisks) <= len(s.DevRoles), "raid_disks", 0x05c, ErrInvalid, "%d members but max_dev %d", s.RaidDisks, len(s.DevRoles))
	c.want(int(s.DevNumber) < len(s.DevRoles), "dev_number", 0x0a0, ErrInvalid, "%d beyond max_dev %d", s.DevNumber, len(s.DevRoles))
	if s.Level != LevelRAID1 {
		// md needs a power-of-two chunk of at least a page (8 sectors) for its stripe cache.
		c.want(s.ChunkSize >= 8 && s.ChunkSize&(s.ChunkSize-1) == 0, "chunksize", 0x058, ErrInvalid,
			"%d sectors; want a power of two of at least 8", s.ChunkSize)
	}
	c.want(s.SuperOffset == SuperOffsetV12, "super_offset", 0x090, ErrUnsupported,
		"sector %d; only v1.2 (superblock at sector 8) is implemented", s.SuperOffset)
	c.want(s.DataOffset > s.SuperOffset, "data_offset", 0x080, ErrInvalid, "sector %d is not after the superblock", s.DataOffset)
	c.want(s.Size <= s.DataSize, "size", 0x050, ErrInvalid, "%d sectors used but data_size is %d", s.Size, s.DataSize)
	if s.FeatureMap&FeatureBitmapOffset != 0 {
		c.want(s.BitmapOffset > 0 && s.SuperOffset+uint64(s.BitmapOffset) < s.DataOffset, "bitmap_offset", 0x060, ErrUnsupported,
			"%d sectors; only a bitmap between the superblock and the data is implemented", s.BitmapOffset)
	}
	return c.err
}
