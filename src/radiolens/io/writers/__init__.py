"""Every output file format radiolens writes, mirroring the readers of :mod:`radiolens.io.formats`.

Writers take what the readers and the prediction path produced (a data set, grey pixels, a heatmap) and put bytes
on disk or into a response: the service's de-identified display copy and heatmap overlay
(:mod:`radiolens.io.writers.png`), preview images (:mod:`radiolens.io.writers.preview`) and DICOM files
(:mod:`radiolens.io.writers.dicom`, atomically where a half-written file could be mistaken for a result). DICOM
results are built with highdicom: the TID 1500 Structured Report (:mod:`radiolens.io.writers.dicom_sr`) and the
heatmap Secondary Capture (:mod:`radiolens.io.writers.dicom_sc`), both written by ``write_dicom``.
"""
