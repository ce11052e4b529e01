"""What the person at the viewer (or the client program) should do about each error the API answers with.

Every JSON error body is ``{"error": {"code", "message", "action"}}``: ``message`` says what is wrong, ``action``
says what to do next, in words a reader at a workstation can follow (never a command-line flag: the person who
uploads a study cannot change how the service was started). The web viewer shows both.
"""

from __future__ import annotations

_ADMIN = "if it keeps happening, tell your radiolens administrator"
_EXPORT = ("Upload a chest radiograph as a DICOM file, or as a PNG or JPEG image; " + _ADMIN + ".")

#: error code -> what to do. Codes are those of ``radiolens.errors`` (upload path), the service's own (not_found)
#: and the HTTP layer's (auth, limits, timeouts, server faults).
ACTIONS: dict[str, str] = {
    # -- the upload (radiolens.errors, raised while reading and de-identifying it)
    "not_dicom": _EXPORT,
    "unreadable_image": _EXPORT,
    "truncated_file": "The file is incomplete (cut off while copying or exporting): export the study again from "
                      "PACS and upload the new copy.",
    "no_pixel_data": "This DICOM file holds no image (for example a report or a presentation state): upload the "
                     "image itself.",
    "unsupported_transfer_syntax": "Export the study again from PACS uncompressed (or as PNG) and upload that copy; "
                                   + _ADMIN + ".",
    "bad_dimensions": "Upload a single radiograph of ordinary size; " + _ADMIN + ".",
    "burned_in_annotation": "For privacy the service does not analyse images whose pixels may show patient "
                            "details. Upload a chest radiograph (CR or DX) without burned-in text, or ask your "
                            "PACS administrator for an export that declares none.",
    "bad_input": "Export the study again and upload the new copy; " + _ADMIN + ".",
    "radiolens_error": "Try again; " + _ADMIN + ".",
    # -- requests
    "validation_error": "Choose a file (or a corrected label from the list) and try again; " + _ADMIN + ".",
    "payload_too_large": "Upload one image at a time (a single DICOM file, PNG or JPEG), not a whole series or "
                         "archive; " + _ADMIN + ".",
    "bad_request": "Reload the page and try again; " + _ADMIN + ".",
    "unsupported_media_type": "Send DICOM instances as multipart/related; type=\"application/dicom\" (a "
                              "DICOMweb STOW-RS client does); " + _ADMIN + ".",
    "not_found": "The study may have been removed or the link is wrong: upload the study again.",
    "method_not_allowed": "Reload the page and try again; " + _ADMIN + ".",
    # -- who may do what
    "unauthorized": "Sign in again (username and password, or your API key); if your account or key was revoked, "
                    "ask your radiolens administrator.",
    "forbidden": "Your key's role cannot do this: ask your radiolens administrator for a key with the right role "
                 "(clinician keys analyse studies and record feedback).",
    # -- the service
    "timeout": "The service is busy: wait a minute and try again; " + _ADMIN + ".",
    "internal_error": "Try again; " + _ADMIN + " (the service log records what failed).",
    "http_error": "Try again; " + _ADMIN + ".",
    "overloaded": "The service is busy with other studies: wait a few seconds and try again; " + _ADMIN + ".",
    "integrity_check_failed": "Do not rely on this result: its stored data no longer matches the audit log, so it "
                              "is withheld. Analyse the study again and tell your radiolens administrator (the "
                              "audit log records the failed check).",
    "not_assessed": "The model did not assess this study (its input check refused the image), so there is no "
                    "result to agree or disagree with: read the study without it.",
    "feedback_exists": "You already gave feedback on this study: change it instead of sending it again (the "
                       "viewer and worklist do this for you when you reload).",
    "csrf_failed": "Reload the page and try again (your sign-in is kept); " + _ADMIN + ".",
    "signin_failed": "Check your username and password and try again; if you forgot your password, ask your "
                     "radiolens administrator to set a new one.",
    "too_many_signins": "Too many failed sign-ins: wait the time shown and try again, or ask your radiolens "
                        "administrator.",
    "last_admin": "Create another admin key first, then revoke this one (at least one admin key must stay "
                  "active).",
}

#: Server-side faults (configuration, model) answer 500 with their code but this action, never their message.
SERVER_FAULT_ACTION = ACTIONS["internal_error"]


def action_for(code: str, status: int = 400) -> str:
    """The action for ``code``; codes without an entry get the generic one for their status class."""
    if code in ACTIONS:
        return ACTIONS[code]
    return SERVER_FAULT_ACTION if status >= 500 else ACTIONS["bad_input"]


def error_body(status: int, code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "action": action_for(code, status)}}
