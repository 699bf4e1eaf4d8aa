//! PDF text, page by page, with pdf-extract: it lays out each page's glyphs by position (line
//! breaks, word gaps, table rows), which keeps words apart where a plain walk of the content
//! stream (lopdf's `extract_text`) glues them (docs/benchmarks.md "PDF text": the comparison).
//! Ligatures and presentation forms are folded (NFKC: "ﬁrst" → "first") so the text matches what
//! people type. A page without text (a scan) is reported and skipped; the library's panics on
//! malformed files are caught and reported as an unreadable file.
//!
//! pdf-extract 0.12.1 misreads the range form (`first last width`) of a CID font's `/W` widths,
//! which Chromium's PDF writer uses: those glyphs get no width and a space is inserted after each
//! ("Fä hre", "7 : 1 5"). [`expand_cid_widths`] rewrites every range into the list form it reads
//! correctly before extraction.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pdf_extract::{Document, Object, PlainTextOutput, output_doc_page};

/// Most glyph widths one `/W` range may expand to (a font has at most 65,536 glyphs).
const MAX_RANGE: i64 = 65_536;
use unicode_normalization::UnicodeNormalization;

/// A PDF's text: its pages' texts, its title when it has one.
#[derive(Debug, Default)]
pub struct PdfText {
    /// The `/Title` of the document information, if set.
    pub title: Option<String>,
    /// Each page's text (1-based page = index + 1); empty for a page without a text layer.
    pub pages: Vec<String>,
    /// Pages whose content could not be read (malformed), 1-based.
    pub unreadable: Vec<u32>,
}

/// Extracts `bytes`' text; `Err` says why the file is skipped.
pub fn extract(bytes: &[u8]) -> Result<PdfText, String> {
    // pdf-extract asserts and unwraps on some malformed files: a panic is that file's problem.
    catch_unwind(AssertUnwindSafe(|| extract_inner(bytes)))
        .unwrap_or_else(|_| Err("malformed PDF (the PDF reader gave up on it)".into()))
}

fn extract_inner(bytes: &[u8]) -> Result<PdfText, String> {
    let mut doc = Document::load_mem(bytes).map_err(|e| format!("unreadable PDF: {e}"))?;
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Err("encrypted PDF (needs a password)".into());
    }
    expand_cid_widths(&mut doc);
    let mut out = PdfText {
        title: title(&doc),
        ..PdfText::default()
    };
    for &number in doc.get_pages().keys() {
        let mut text = String::new();
        let page = catch_unwind(AssertUnwindSafe(|| {
            output_doc_page(&doc, &mut PlainTextOutput::new(&mut text), number)
        }));
        if !matches!(page, Ok(Ok(()))) {
            out.unreadable.push(number);
            text.clear();
        }
        out.pages.push(tidy(&text));
    }
    Ok(out)
}

/// Rewrites each `/W` array of the document's CID fonts from `c [w…]` and `first last w`
/// entries into `c [w…]` entries only (see the module docs). A malformed array is left as it is.
fn expand_cid_widths(doc: &mut Document) {
    let fonts: Vec<_> = doc
        .objects
        .iter()
        .filter_map(|(&id, object)| {
            let dict = object.as_dict().ok()?;
            let subtype = dict.get(b"Subtype").ok()?.as_name().ok()?;
            matches!(subtype, b"CIDFontType0" | b"CIDFontType2").then_some(id)
        })
        .collect();
    for font in fonts {
        // The array itself, or the object it refers to.
        let target = match doc.get_object(font).and_then(|f| f.as_dict()?.get(b"W")) {
            Ok(Object::Reference(id)) => *id,
            Ok(Object::Array(_)) => font,
            _ => continue,
        };
        let Ok(object) = doc.get_object_mut(target) else {
            continue;
        };
        let array = match object {
            Object::Dictionary(dict) => match dict.get_mut(b"W") {
                Ok(Object::Array(array)) => array,
                _ => continue,
            },
            Object::Array(array) => array,
            _ => continue,
        };
        if let Some(expanded) = expand(array) {
            *array = expanded;
        }
    }
}

/// One `/W` array with its ranges written out; `None` when it is malformed.
fn expand(w: &[Object]) -> Option<Vec<Object>> {
    let number = |o: &Object| match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    };
    let mut out = Vec::with_capacity(w.len());
    let mut i = 0;
    while i < w.len() {
        let first = w[i].as_i64().ok()?;
        match w.get(i + 1)? {
            Object::Array(widths) => {
                out.push(Object::Integer(first));
                out.push(Object::Array(widths.clone()));
                i += 2;
            }
            last => {
                let last = last.as_i64().ok()?;
                let width = number(w.get(i + 2)?)?;
                if last < first || last - first >= MAX_RANGE {
                    return None;
                }
                out.push(Object::Integer(first));
                out.push(Object::Array(
                    (first..=last).map(|_| Object::Real(width)).collect(),
                ));
                i += 3;
            }
        }
    }
    Some(out)
}

/// NFKC (ligatures, full-width forms), no control characters, spaces collapsed within lines,
/// at most one blank line in a row.
fn tidy(text: &str) -> String {
    let folded: String = text.nfkc().collect();
    let mut out = String::with_capacity(folded.len());
    let mut blank = 0;
    for line in folded.lines() {
        let line = line
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if line.is_empty() {
            blank += 1;
            if blank == 1 && !out.is_empty() {
                out.push('\n');
            }
            continue;
        }
        blank = 0;
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// The document information's `/Title`: UTF-16BE with a byte-order mark, or (close enough for
/// a title) PDFDocEncoding read as Latin-1.
fn title(doc: &Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let (_, info) = doc.dereference(info).ok()?;
    let Object::String(bytes, _) = info.as_dict().ok()?.get(b"Title").ok()? else {
        return None;
    };
    let text = match bytes.strip_prefix(&[0xFE, 0xFF]) {
        Some(utf16) => {
            let units: Vec<u16> = utf16
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        None => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_folds_ligatures_and_spacing() {
        assert_eq!(
            tidy("\n\n  The  ﬁrst   watch\u{0}\n\n\n\nstaﬀ room \n"),
            "The first watch\n\nstaff room"
        );
    }

    #[test]
    fn width_ranges_are_written_out_and_malformed_arrays_left_alone() {
        let w = vec![
            Object::Integer(0),
            Object::Array(vec![Object::Real(600.0)]),
            Object::Integer(20),
            Object::Integer(22),
            Object::Real(636.5),
        ];
        let expanded = expand(&w).expect("well formed");
        assert_eq!(expanded.len(), 4);
        assert_eq!(
            expanded[3],
            Object::Array(vec![Object::Real(636.5); 3]),
            "20..=22 each 636.5"
        );
        assert!(expand(&[Object::Integer(5), Object::Integer(1), Object::Integer(9)]).is_none());
        assert!(
            expand(&[
                Object::Integer(0),
                Object::Integer(70_000),
                Object::Integer(1)
            ])
            .is_none()
        );
        assert!(expand(&[Object::Integer(0)]).is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(extract(b"%PDF-1.7\nnot really a pdf").is_err());
        assert!(extract(b"").is_err());
        let mut truncated = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/pdf/handbook.pdf"),
        )
        .expect("fixture");
        truncated.truncate(truncated.len() / 2);
        let _ = extract(&truncated);
    }
}
