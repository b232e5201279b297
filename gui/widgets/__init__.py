"""Small reusable widgets: job progress, QR code, copyable fields, notices."""
