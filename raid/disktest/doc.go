// Package disktest fakes member disks at the kernel boundary for the RAID engine's tests: a crashable disk
// that keeps only what was made durable when it "loses power", and a fault-injecting disk that fails,
// delays or disappears by operation and offset. Both implement gateway/block.Device; block.NewMemory is the
// plain memory disk.
package disktest
