//! Host tests of the migration stream: round trips, every split point, and
//! each error the decoder reports.

extern crate std;

use super::*;
use std::vec::Vec;

/// Owned copy of a record, for comparing what the decoder produced.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Header(Header),
    Pages(u64, u16, Vec<u8>),
    Zero(u64, u64),
    Vcpu(u16, Vec<u8>),
    Device(DeviceKind, u8, Vec<u8>),
    Pass(u16),
    End(u64, u64),
}

#[derive(Default)]
struct Collect(Vec<Owned>);

impl RecordSink for Collect {
    type Error = ();
    fn header(&mut self, h: &Header) -> Result<(), ()> {
        self.0.push(Owned::Header(*h));
        Ok(())
    }
    fn record(&mut self, r: &Record<'_>) -> Result<(), ()> {
        self.0.push(match *r {
            Record::Pages {
                first_page,
                count,
                data,
            } => Owned::Pages(first_page, count, data.to_vec()),
            Record::ZeroPages { first_page, count } => Owned::Zero(first_page, count),
            Record::Vcpu { index, state } => Owned::Vcpu(index, state.to_vec()),
            Record::Device {
                kind,
                instance,
                state,
            } => Owned::Device(kind, instance, state.to_vec()),
            Record::PassMark { pass } => Owned::Pass(pass),
            Record::End {
                pages_total,
                checksum,
            } => Owned::End(pages_total, checksum),
        });
        Ok(())
    }
}

fn page(n: u8) -> Vec<u8> {
    (0..PAGE_SIZE).map(|i| (i as u8) ^ n).collect()
}

/// A valid stream with every record kind.
fn sample() -> (Vec<u8>, Header) {
    let h = Header::new(64, 2, 0, "child-a");
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    let mut buf = std::vec![0u8; MAX_RECORD];
    let mut put = |r: Option<&Record<'_>>, enc: &mut Encoder, out: &mut Vec<u8>| {
        let n = match r {
            Some(r) => enc.record(r, &mut buf).expect("record"),
            None => enc.end(&mut buf).expect("end"),
        };
        out.extend_from_slice(&buf[..n]);
    };
    let mut hb = [0u8; HEADER_LEN];
    assert_eq!(enc.header(&h, &mut hb), Ok(HEADER_LEN));
    out.extend_from_slice(&hb);
    let two: Vec<u8> = [page(1), page(2)].concat();
    put(Some(&Record::PassMark { pass: 1 }), &mut enc, &mut out);
    put(
        Some(&Record::Pages {
            first_page: 0,
            count: 2,
            data: &two,
        }),
        &mut enc,
        &mut out,
    );
    put(
        Some(&Record::ZeroPages {
            first_page: 2,
            count: 62,
        }),
        &mut enc,
        &mut out,
    );
    let p = page(9);
    put(
        Some(&Record::Pages {
            first_page: 63,
            count: 1,
            data: &p,
        }),
        &mut enc,
        &mut out,
    );
    put(
        Some(&Record::Vcpu {
            index: 1,
            state: &[7; VCPU_STATE_BYTES],
        }),
        &mut enc,
        &mut out,
    );
    put(
        Some(&Record::Device {
            kind: DeviceKind::Storage,
            instance: 3,
            state: b"disk",
        }),
        &mut enc,
        &mut out,
    );
    put(None, &mut enc, &mut out);
    assert_eq!(enc.bytes(), out.len() as u64);
    (out, h)
}

fn decode_chunks(stream: &[u8], split: &[usize]) -> Result<(Vec<Owned>, Summary), FormatError> {
    let mut d = std::boxed::Box::new(Decoder::new());
    let mut sink = Collect::default();
    let mut at = 0;
    for &s in split.iter().chain(core::iter::once(&stream.len())) {
        match d.feed(&stream[at..s], &mut sink) {
            Ok(n) => assert_eq!(n, s - at),
            Err(DecodeError::Format(e)) => return Err(e),
            Err(DecodeError::Sink(())) => panic!("sink"),
        }
        at = s;
    }
    d.finish().map(|s| (sink.0, s))
}

#[test]
fn round_trip() {
    let (s, h) = sample();
    let (recs, sum) = decode_chunks(&s, &[]).expect("decodes");
    assert_eq!(recs[0], Owned::Header(h));
    assert_eq!(h.name(), "child-a");
    assert_eq!(recs[1], Owned::Pass(1));
    assert_eq!(recs[2], Owned::Pages(0, 2, [page(1), page(2)].concat()));
    assert_eq!(recs[3], Owned::Zero(2, 62));
    assert_eq!(recs[5], Owned::Vcpu(1, std::vec![7; VCPU_STATE_BYTES]));
    assert_eq!(
        recs[6],
        Owned::Device(DeviceKind::Storage, 3, b"disk".to_vec())
    );
    assert!(matches!(recs[7], Owned::End(65, _)));
    assert_eq!(sum.pages_total, 65);
    assert_eq!(sum.bytes, s.len() as u64);
}

#[test]
fn every_split_point_gives_the_same_records() {
    let (s, _) = sample();
    let (whole, _) = decode_chunks(&s, &[]).expect("whole");
    for at in 0..=s.len() {
        let (recs, _) = decode_chunks(&s, &[at]).expect("split");
        assert_eq!(recs, whole, "split at {at}");
    }
    // Byte by byte.
    let all: Vec<usize> = (1..s.len()).collect();
    assert_eq!(decode_chunks(&s, &all).expect("bytes").0, whole);
}

#[test]
fn checksum_is_word_fnv1a() {
    let mut c = Checksum::new();
    assert_eq!(c.value(), 0xcbf2_9ce4_8422_2325);
    c.update(&[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        c.value(),
        (0xcbf2_9ce4_8422_2325u64 ^ 1).wrapping_mul(0x1b3 | 1 << 40)
    );
    // Any split gives the same value; a partial word is zero-padded.
    let data: Vec<u8> = (0..100u8).collect();
    let mut whole = Checksum::new();
    whole.update(&data);
    for at in 0..data.len() {
        let mut c = Checksum::new();
        c.update(&data[..at]);
        c.update(&data[at..]);
        assert_eq!(c.value(), whole.value());
    }
    let mut padded = Checksum::new();
    padded.update(&[data.as_slice(), &[0, 0, 0, 0]].concat());
    assert_eq!(padded.value(), whole.value());
}

fn expect_err(stream: &[u8], want: FormatError) {
    for at in [0, 1, stream.len() / 2, stream.len()] {
        assert_eq!(
            decode_chunks(stream, &[at.min(stream.len())]).map(|_| ()),
            Err(want),
            "split at {at}"
        );
    }
}

/// The header, then one raw record, then a valid End.
fn with_record(h: &Header, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    let mut hb = [0u8; HEADER_LEN];
    encode_header(h, &mut hb).expect("header");
    s.extend_from_slice(&hb);
    s.push(kind);
    s.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    s.extend_from_slice(payload);
    s
}

#[test]
fn header_errors() {
    let (good, _) = sample();
    let mut bad = good.clone();
    bad[3] = b'X';
    expect_err(&bad, FormatError::BadMagic);
    let mut bad = good.clone();
    bad[8] = 2;
    expect_err(&bad, FormatError::UnsupportedVersion(2));
    let mut bad = good.clone();
    bad[10] = 0x80;
    expect_err(&bad, FormatError::UnknownFlags(0x80));
    let mut bad = good.clone();
    bad[12..14].copy_from_slice(&[0, 0]);
    expect_err(&bad, FormatError::NoVcpus);
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&0u64.to_le_bytes());
    expect_err(&bad, FormatError::BadPageCount(0));
    let mut bad = good.clone();
    bad[14] = 33;
    expect_err(&bad, FormatError::BadName);
    let mut bad = good.clone();
    bad[24] = 0xff; // not UTF-8
    expect_err(&bad, FormatError::BadName);
    let mut bad = good.clone();
    bad[50] = b'x'; // past the name's length
    expect_err(&bad, FormatError::BadName);
}

#[test]
fn record_errors() {
    let h = Header::new(8, 1, 0, "x");
    expect_err(&with_record(&h, 0, &[]), FormatError::UnknownKind(0));
    expect_err(&with_record(&h, 7, &[0; 3]), FormatError::UnknownKind(7));
    expect_err(
        &with_record(&h, kind::ZERO_PAGES, &[0; 15]),
        FormatError::BadLength {
            kind: kind::ZERO_PAGES,
            len: 15,
        },
    );
    // A length beyond the largest record is refused from the prefix alone.
    let mut huge = with_record(&h, kind::DEVICE, &[]);
    huge.truncate(HEADER_LEN + 1);
    huge.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
    expect_err(
        &huge,
        FormatError::BadLength {
            kind: kind::DEVICE,
            len: MAX_PAYLOAD as u32 + 1,
        },
    );
    let mut p = std::vec![0u8; PAGES_META + PAGE_SIZE];
    p[0..8].copy_from_slice(&8u64.to_le_bytes());
    p[8..10].copy_from_slice(&1u16.to_le_bytes());
    expect_err(
        &with_record(&h, kind::PAGES, &p),
        FormatError::PageOutOfRange {
            first_page: 8,
            count: 1,
        },
    );
    p[0..8].copy_from_slice(&0u64.to_le_bytes());
    p[8..10].copy_from_slice(&2u16.to_le_bytes());
    expect_err(
        &with_record(&h, kind::PAGES, &p),
        FormatError::BadLength {
            kind: kind::PAGES,
            len: (PAGES_META + PAGE_SIZE) as u32,
        },
    );
    let mut z = [0u8; 16];
    z[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    z[8..16].copy_from_slice(&2u64.to_le_bytes());
    expect_err(
        &with_record(&h, kind::ZERO_PAGES, &z),
        FormatError::PageOutOfRange {
            first_page: u64::MAX,
            count: 2,
        },
    );
    z = [0; 16];
    expect_err(
        &with_record(&h, kind::ZERO_PAGES, &z),
        FormatError::BadRecordPageCount(0),
    );
    expect_err(
        &with_record(&h, kind::VCPU, &[1, 0, 5]),
        FormatError::VcpuOutOfRange(1),
    );
    expect_err(
        &with_record(&h, kind::VCPU, &[0, 0]),
        FormatError::BadLength {
            kind: kind::VCPU,
            len: 2,
        },
    );
}

#[test]
fn end_errors_truncation_and_trailing_data() {
    let (good, _) = sample();
    let n = good.len();
    // Flip a page byte: the checksum catches it.
    let mut bad = good.clone();
    bad[HEADER_LEN + 7 + 20] ^= 1;
    assert!(matches!(
        decode_chunks(&bad, &[]),
        Err(FormatError::ChecksumMismatch { .. })
    ));
    // Wrong page total (checksum field left consistent).
    let mut bad = good.clone();
    bad[n - 16] ^= 1;
    assert!(matches!(
        decode_chunks(&bad, &[]),
        Err(FormatError::PageTotalMismatch {
            expected: 64,
            counted: 65
        })
    ));
    for cut in [0, 10, HEADER_LEN, HEADER_LEN + 3, n - 1] {
        assert_eq!(
            decode_chunks(&good[..cut], &[]).map(|_| ()),
            Err(FormatError::Truncated { offset: cut as u64 })
        );
    }
    let mut more = good.clone();
    more.push(0);
    expect_err(&more, FormatError::TrailingData);
    // Errors stick.
    let mut d = std::boxed::Box::new(Decoder::new());
    let mut sink = Collect::default();
    assert!(d.feed(b"NOTMAGIC", &mut sink).is_ok());
    let e = d.feed(&[0; 100], &mut sink);
    assert_eq!(e, Err(DecodeError::Format(FormatError::BadMagic)));
    assert_eq!(
        d.feed(&good, &mut sink),
        Err(DecodeError::Format(FormatError::BadMagic))
    );
    assert_eq!(d.finish(), Err(FormatError::BadMagic));
}

#[test]
fn sink_errors_stop_the_decoder() {
    struct No;
    impl RecordSink for No {
        type Error = &'static str;
        fn header(&mut self, _: &Header) -> Result<(), Self::Error> {
            Ok(())
        }
        fn record(&mut self, _: &Record<'_>) -> Result<(), Self::Error> {
            Err("full")
        }
    }
    let (good, _) = sample();
    let mut d = std::boxed::Box::new(Decoder::new());
    assert_eq!(d.feed(&good, &mut No), Err(DecodeError::Sink("full")));
    assert_eq!(d.finish(), Err(FormatError::SinkRejected));
}

#[test]
fn encoder_checks() {
    let h = Header::new(4, 1, FLAG_SAVED_STATE, "é".repeat(20).as_str());
    assert_eq!(h.name().len(), 32);
    let mut enc = Encoder::new();
    let mut buf = std::vec![0u8; MAX_RECORD];
    assert_eq!(
        enc.record(&Record::PassMark { pass: 1 }, &mut buf),
        Err(FormatError::OutOfOrder)
    );
    enc.header(&h, &mut buf).expect("header");
    assert_eq!(
        enc.header(&h, &mut buf),
        Err(FormatError::OutOfOrder),
        "second header"
    );
    assert_eq!(
        enc.record(
            &Record::ZeroPages {
                first_page: 3,
                count: 2
            },
            &mut buf
        ),
        Err(FormatError::PageOutOfRange {
            first_page: 3,
            count: 2
        })
    );
    assert_eq!(
        enc.record(&Record::PassMark { pass: 1 }, &mut [0u8; 3]),
        Err(FormatError::BufferTooSmall { need: 7 })
    );
    // In-place pages match the copying encoder.
    let data = [page(3), page(4)].concat();
    buf[PAGES_DATA_OFFSET..PAGES_DATA_OFFSET + data.len()].copy_from_slice(&data);
    let n = enc.pages_in_place(1, 2, &mut buf).expect("in place");
    let mut other = std::vec![0u8; MAX_RECORD];
    let m = encode_record(
        &Record::Pages {
            first_page: 1,
            count: 2,
            data: &data,
        },
        &mut other,
    )
    .expect("copy");
    assert_eq!(buf[..n], other[..m]);
    assert_eq!(
        enc.pages_in_place(0, 17, &mut std::vec![0u8; MAX_RECORD + PAGE_SIZE]),
        Err(FormatError::BadRecordPageCount(17))
    );
    enc.end(&mut buf).expect("end");
    assert_eq!(enc.end(&mut buf), Err(FormatError::OutOfOrder));
}
