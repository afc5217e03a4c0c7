//! QR codes of otpauth URIs: an SVG document for the web page and the API (the agent draws its own in the terminal).

use qrcode::render::svg;
use qrcode::QrCode;

/// The QR code of `data` as an SVG document (dark on white, with a quiet zone), with a French
/// then English `<title>` for screen readers.
pub fn svg(data: &str) -> String {
    match QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        // Only data over ~2.9 KB fails; an otpauth URI is ~120 bytes.
        Err(_) => String::new(),
    }
}
