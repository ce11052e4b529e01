"""The DICOM network driver: images in from a PACS or modality (C-STORE, and STOW-RS through the service),
results back as DICOM (TID 1500 SR and a heatmap Secondary Capture in the same study).

receiver (C-STORE SCP) -> the spool (``serve.store.spool``: durable, encrypted) -> processor (routing rules, then
the service's prediction: de-identification for storage, gate, score, heatmap, audit) -> results (``io.writers``,
original UIDs) -> the spool's outbox -> sender (C-STORE SCU or STOW-RS, retries, dead letter, audited).
"""
