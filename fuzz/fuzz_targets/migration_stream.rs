//! Fuzz target: arbitrary bytes as a migration stream (what a destination
//! root partition receives from the network, or reads from a saved-state
//! file), fed to the streaming decoder in chunks whose sizes the first byte
//! picks. Invariants: no panic; a record reaches the sink only within the
//! header's page and vCPU ranges; a stream the decoder accepts decodes to the
//! same records when fed in one piece.
#![no_main]

use ipc::migration::{
    DecodeError, Decoder, Header, MAX_PAGES_PER_RECORD, PAGE_SIZE, Record, RecordSink,
};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Check {
    header: Option<Header>,
    records: usize,
    pages: u64,
}

impl RecordSink for Check {
    type Error = ();
    fn header(&mut self, h: &Header) -> Result<(), ()> {
        assert!(self.header.is_none());
        self.header = Some(*h);
        Ok(())
    }
    fn record(&mut self, r: &Record<'_>) -> Result<(), ()> {
        let h = self.header.expect("header first");
        match *r {
            Record::Pages {
                first_page,
                count,
                data,
            } => {
                assert!(count >= 1 && usize::from(count) <= MAX_PAGES_PER_RECORD);
                assert_eq!(data.len(), usize::from(count) * PAGE_SIZE);
                assert!(first_page + u64::from(count) <= h.pages);
            }
            Record::ZeroPages { first_page, count } => {
                assert!(count >= 1 && first_page + count <= h.pages);
            }
            Record::Vcpu { index, .. } => assert!(index < h.vcpus),
            Record::End { pages_total, .. } => assert_eq!(pages_total, self.pages),
            Record::Device { .. } | Record::PassMark { .. } => {}
        }
        self.pages += r.pages();
        self.records += 1;
        Ok(())
    }
}

fn run(data: &[u8], chunk: usize) -> (Result<(), DecodeError<()>>, Check) {
    let mut d = Box::new(Decoder::new());
    let mut sink = Check::default();
    for piece in data.chunks(chunk.max(1)) {
        if let Err(e) = d.feed(piece, &mut sink) {
            return (Err(e), sink);
        }
    }
    (d.finish().map(|_| ()).map_err(DecodeError::Format), sink)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (split, whole) = (run(rest, usize::from(first) + 1), run(rest, rest.len()));
    assert_eq!(split.0, whole.0);
    assert_eq!(split.1.records, whole.1.records);
});
