"""VM motion: xl domains to and from XCP (XenAPI, XVA) and OVF/OVA, with disks
converted as streams.

Every direction goes through one neutral record, :class:`~xenkit.motion.model.VmSpec`,
so each format needs a reader and a writer of that record, not one converter per pair.
What a direction cannot carry is reported in a :class:`~xenkit.motion.model.Losses`.
"""
