//! Decoder tests: recorded gzip bodies, round trips through each codec's own
//! encoder, the output cap, truncation and header parsing.

use super::*;
use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/");
    std::fs::read(format!("{dir}{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn decode_in_chunks(
    encoding: Encoding,
    body: &[u8],
    chunk: usize,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = Decoder::new(encoding, limit)?;
    let mut out = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        decoder.push(piece, &mut out)?;
    }
    decoder.finish(&mut out)?;
    Ok(out)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn encode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Identity => data.to_vec(),
        Encoding::Gzip => gzip(data),
        Encoding::Deflate => {
            let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
        Encoding::Brotli => {
            let mut out = Vec::new();
            let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            enc.write_all(data).unwrap();
            drop(enc);
            out
        }
        Encoding::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

const ALL: [Encoding; 5] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Brotli,
    Encoding::Zstd,
];

#[test]
fn recorded_gzip_bodies_decode_to_the_sse_files() {
    for name in [
        "anthropic-messages-tool_use_gzip-1.sse",
        "gemini-openai-chat-text-1.sse",
        "gemini-openai-chat-tool_call-1.sse",
    ] {
        let wire = fixture(&format!("{name}.gz"));
        let want = fixture(name);
        for chunk in [1, 2, 7, 64, 4096] {
            let got = decode_in_chunks(Encoding::Gzip, &wire, chunk, 1 << 20).expect(name);
            assert_eq!(got, want, "{name} in chunks of {chunk}");
        }
    }
}

#[test]
fn every_codec_round_trips_a_fixture() {
    let data = fixture("openrouter-chat-reasoning_comments-1.sse");
    for encoding in ALL {
        let wire = encode(encoding, &data);
        for chunk in [1, 3, 100, 1 << 16] {
            let got = decode_in_chunks(encoding, &wire, chunk, 1 << 20);
            assert_eq!(
                got.as_deref(),
                Ok(&data[..]),
                "{encoding:?} in chunks of {chunk}"
            );
        }
    }
}

#[test]
fn raw_deflate_is_accepted_too() {
    let data = fixture("anthropic-messages-text-1.sse");
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&data).unwrap();
    let wire = enc.finish().unwrap();
    for chunk in [1, 5, 1 << 16] {
        let got = decode_in_chunks(Encoding::Deflate, &wire, chunk, 1 << 20);
        assert_eq!(
            got.as_deref(),
            Ok(&data[..]),
            "raw deflate in chunks of {chunk}"
        );
    }
}

#[test]
fn multi_member_gzip_and_multi_frame_zstd() {
    let (a, b) = (b"data: one\n\n".as_slice(), b"data: two\n\n".as_slice());
    let want = [a, b].concat();
    let gz = [gzip(a), gzip(b)].concat();
    assert_eq!(
        decode_in_chunks(Encoding::Gzip, &gz, 3, 1024).as_deref(),
        Ok(&want[..])
    );
    let zst = [encode(Encoding::Zstd, a), encode(Encoding::Zstd, b)].concat();
    assert_eq!(
        decode_in_chunks(Encoding::Zstd, &zst, 3, 1024).as_deref(),
        Ok(&want[..])
    );
}

#[test]
fn a_decompression_bomb_hits_the_limit() {
    let zeros = vec![0u8; 8 << 20];
    for encoding in ALL {
        let wire = encode(encoding, &zeros);
        let got = decode_in_chunks(encoding, &wire, 4096, 1 << 20);
        assert_eq!(
            got,
            Err(DecodeError::TooLarge { limit: 1 << 20 }),
            "{encoding:?}"
        );
    }
}

#[test]
fn output_exactly_at_the_limit_is_fine() {
    let data = vec![b'x'; 1000];
    for encoding in ALL {
        let got = decode_in_chunks(encoding, &encode(encoding, &data), 64, 1000);
        assert_eq!(got.map(|v| v.len()), Ok(1000), "{encoding:?}");
    }
}

#[test]
fn truncated_and_corrupt_bodies_error() {
    let data = fixture("openai-chat-text-1.sse");
    for encoding in [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ] {
        let wire = encode(encoding, &data);
        let cut = &wire[..wire.len() / 2];
        let got = decode_in_chunks(encoding, cut, 64, 1 << 20);
        assert!(
            matches!(got, Err(DecodeError::Truncated { .. })),
            "{encoding:?}: {got:?}"
        );
    }
    let got = decode_in_chunks(Encoding::Gzip, b"not gzip at all", 4, 1024);
    assert!(matches!(got, Err(DecodeError::Corrupt { .. })), "{got:?}");
}

#[test]
fn errors_close_the_decoder_and_empty_bodies_are_fine() {
    let mut decoder = Decoder::new(Encoding::Gzip, 1024).unwrap();
    assert!(
        decoder
            .push(b"garbage, not a gzip header", &mut Vec::new())
            .is_err()
    );
    assert_eq!(
        decoder.push(b"x", &mut Vec::new()),
        Err(DecodeError::Closed)
    );
    for encoding in ALL {
        assert_eq!(
            decode_in_chunks(encoding, b"", 1, 10),
            Ok(Vec::new()),
            "{encoding:?}"
        );
    }
}

#[test]
fn header_values() {
    let parse = Encoding::from_header;
    assert_eq!(parse(None), Ok(Encoding::Identity));
    assert_eq!(parse(Some("")), Ok(Encoding::Identity));
    assert_eq!(parse(Some(" GZIP ")), Ok(Encoding::Gzip));
    assert_eq!(parse(Some("x-gzip")), Ok(Encoding::Gzip));
    assert_eq!(parse(Some("identity, br")), Ok(Encoding::Brotli));
    assert_eq!(parse(Some("deflate")), Ok(Encoding::Deflate));
    assert_eq!(parse(Some("zstd")), Ok(Encoding::Zstd));
    assert!(matches!(
        parse(Some("gzip, br")),
        Err(DecodeError::Unsupported(_))
    ));
    assert!(matches!(
        parse(Some("compress")),
        Err(DecodeError::Unsupported(_))
    ));
}

#[test]
fn decoder_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Decoder>();
}
