"""Every output file format radiolens writes, mirroring the readers of :mod:`radiolens.io.formats`.

Writers take what the readers produced (a data set, grey pixels) and put bytes on disk, atomically where a
half-written file could be mistaken for a result. DICOM results (Structured Report, Secondary Capture) come next
in :mod:`radiolens.io.writers.dicom`.
"""
