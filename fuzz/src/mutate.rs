//! A blind mutator in the style of libFuzzer's: stacked byte-level edits, interesting values,
//! dictionary tokens and splices between corpus entries, from a seeded RNG so runs repeat.
//! It has no coverage feedback: it finds shallow crashes near the seeds, not deep ones.

use fastrand::Rng;

/// Inputs never grow past this, so one run's time goes to many small inputs.
pub const MAX_LEN: usize = 64 << 10;

/// Values that sit on boundaries parsers get wrong (sign, width, overflow), little-endian.
const INTERESTING: &[&[u8]] = &[
    &[0],
    &[1],
    &[0x7f],
    &[0x80],
    &[0xff],
    &[0xff, 0xff],
    &[0x00, 0x80],
    &[0xff, 0x7f],
    &[0x00, 0x01],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x00, 0x00, 0x00, 0x80],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0x00, 0x00, 0x01, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0, 0, 0, 0, 0, 0x80],
    b"0",
    b"-1",
    b"65535",
    b"4294967295",
    b"9999999999999999999999",
    b"1e309",
    b"NaN",
];

pub struct Mutator<'a> {
    rng: Rng,
    corpus: &'a [Vec<u8>],
    dictionary: &'a [&'a [u8]],
}

impl<'a> Mutator<'a> {
    /// `corpus` must not be empty; `seed` fixes the whole sequence of inputs.
    pub fn new(seed: u64, corpus: &'a [Vec<u8>], dictionary: &'a [&'a [u8]]) -> Self {
        Mutator { rng: Rng::with_seed(seed), corpus, dictionary }
    }

    /// The next input: a corpus entry with one to eight stacked edits.
    pub fn next_input(&mut self) -> Vec<u8> {
        let mut data = match self.corpus.len() {
            0 => Vec::new(),
            n => self.corpus[self.rng.usize(..n)].clone(),
        };
        let edits = 1 << self.rng.u32(0..4);
        for _ in 0..edits {
            self.edit(&mut data);
        }
        data.truncate(MAX_LEN);
        data
    }

    fn edit(&mut self, data: &mut Vec<u8>) {
        let rng = &mut self.rng;
        let len = data.len();
        match rng.u8(0..10) {
            // Flip one bit.
            0 if len > 0 => {
                let at = rng.usize(..len);
                data[at] ^= 1 << rng.u8(0..8);
            }
            // Set one byte.
            1 if len > 0 => {
                let at = rng.usize(..len);
                data[at] = rng.u8(..);
            }
            // Add or subtract a little from one byte (lengths and counts off by a few).
            2 if len > 0 => {
                let at = rng.usize(..len);
                data[at] = data[at].wrapping_add(rng.u8(0..32)).wrapping_sub(16);
            }
            // Overwrite with an interesting value.
            3 => {
                let value = INTERESTING[rng.usize(..INTERESTING.len())];
                overwrite(rng, data, value);
            }
            // Insert random bytes.
            4 => {
                let n = rng.usize(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                insert(rng, data, &bytes);
            }
            // Delete a range.
            5 if len > 0 => {
                let at = rng.usize(..len);
                let n = rng.usize(1..=(len - at).min(64));
                data.drain(at..at + n);
            }
            // Duplicate a range in place (repeated chunks, sections, array items).
            6 if len > 0 => {
                let at = rng.usize(..len);
                let n = rng.usize(1..=(len - at).min(256));
                let chunk = data[at..at + n].to_vec();
                insert(rng, data, &chunk);
            }
            // Insert or overwrite with a dictionary token.
            7 | 8 if !self.dictionary.is_empty() => {
                let token = self.dictionary[rng.usize(..self.dictionary.len())];
                if rng.bool() {
                    insert(rng, data, token);
                } else {
                    overwrite(rng, data, token);
                }
            }
            // Splice: this input's head, another entry's tail.
            _ if !self.corpus.is_empty() => {
                let other = &self.corpus[rng.usize(..self.corpus.len())];
                let head = rng.usize(..=len);
                let tail = rng.usize(..=other.len());
                data.truncate(head);
                data.extend_from_slice(&other[tail..]);
            }
            _ => data.push(rng.u8(..)),
        }
    }
}

fn insert(rng: &mut Rng, data: &mut Vec<u8>, bytes: &[u8]) {
    let at = rng.usize(..=data.len());
    data.splice(at..at, bytes.iter().copied());
}

fn overwrite(rng: &mut Rng, data: &mut Vec<u8>, bytes: &[u8]) {
    if data.len() < bytes.len() {
        data.extend_from_slice(bytes);
        return;
    }
    let at = rng.usize(..=data.len() - bytes.len());
    data[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_inputs_and_inputs_change() {
        let corpus = vec![b"hello world".to_vec(), b"{\"a\": [1, 2]}".to_vec()];
        let dict: &[&[u8]] = &[b"TOKEN"];
        let run = |seed| {
            let mut m = Mutator::new(seed, &corpus, dict);
            (0..200).map(|_| m.next_input()).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let changed = a.iter().filter(|i| !corpus.contains(i)).count();
        assert!(changed > 150, "only {changed} of 200 inputs differ from the seeds");
        assert!(a.iter().any(|i| i.windows(5).any(|w| w == b"TOKEN")), "dictionary never used");
        assert!(a.iter().all(|i| i.len() <= MAX_LEN));
    }

    #[test]
    fn empty_corpus_still_yields_inputs() {
        let mut m = Mutator::new(1, &[], &[]);
        let inputs: Vec<_> = (0..50).map(|_| m.next_input()).collect();
        assert!(inputs.iter().any(|i| !i.is_empty()));
    }
}
