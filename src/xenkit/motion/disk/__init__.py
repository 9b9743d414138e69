"""Disk images as streams of extents: readers and writers of raw, qcow2, VHD and
streamOptimized VMDK, so a disk moves from one format to another (or into an XVA
or OVA member) in one pass, skipping what reads as zeros."""
