//! Building and checking [`Candidates`], the column-layout pick input.

use crate::types::{CandidateRow, Candidates};

/// Applies `$m!(field)` to each of the 14 columns, in WIT order.
macro_rules! for_each_column {
    ($m:ident) => {
        $m!(
            node,
            in_flight,
            max_concurrent,
            node_in_flight,
            cpu_pct,
            mem_used_mib,
            mem_total_mib,
            gpu_count,
            gpu_util_pct,
            gpu_mem_free_mib,
            gpu_mem_total_mib,
            latency_ms,
            latency_samples,
            cost_per_hour
        )
    };
}

impl Candidates {
    /// No candidates, with room for `n` in every column.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        macro_rules! build {
            ($($f:ident),*) => { Self { $($f: Vec::with_capacity(n)),* } };
        }
        for_each_column!(build)
    }

    /// Appends one candidate: one element to every column.
    pub fn push(&mut self, row: CandidateRow) {
        macro_rules! push {
            ($($f:ident),*) => { $(self.$f.push(row.$f);)* };
        }
        for_each_column!(push);
    }

    /// How many candidates there are: the length of the `node` column (the
    /// other columns have the same length when [`Self::check`] passes).
    #[must_use]
    pub fn len(&self) -> usize {
        self.node.len()
    }

    /// Whether there is no candidate (the `node` column is empty).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.node.is_empty()
    }

    /// Candidate `i` as a row, or `None` when `i` is out of range of any
    /// column.
    #[must_use]
    pub fn row(&self, i: usize) -> Option<CandidateRow> {
        macro_rules! row {
            ($($f:ident),*) => { Some(CandidateRow { $($f: *self.$f.get(i)?),* }) };
        }
        for_each_column!(row)
    }

    /// The number of candidates n, checking what the WIT contract promises
    /// the guest: every column has the same length, and n >= 1.
    ///
    /// # Errors
    ///
    /// A description of the first column whose length differs from `node`'s,
    /// or of an empty input.
    pub fn check(&self) -> Result<usize, String> {
        let n = self.node.len();
        macro_rules! check {
            ($($f:ident),*) => {
                $(
                    if self.$f.len() != n {
                        return Err(format!(
                            "column `{}` has {} entries but `node` has {n}",
                            stringify!($f).replace('_', "-"),
                            self.$f.len(),
                        ));
                    }
                )*
            };
        }
        for_each_column!(check);
        if n == 0 {
            return Err("no candidates".to_owned());
        }
        Ok(n)
    }
}

impl FromIterator<CandidateRow> for Candidates {
    fn from_iter<I: IntoIterator<Item = CandidateRow>>(rows: I) -> Self {
        let rows = rows.into_iter();
        let mut out = Self::with_capacity(rows.size_hint().0);
        for row in rows {
            out.push(row);
        }
        out
    }
}

impl Extend<CandidateRow> for Candidates {
    fn extend<I: IntoIterator<Item = CandidateRow>>(&mut self, rows: I) {
        for row in rows {
            self.push(row);
        }
    }
}

impl From<&protocol::GpuStats> for crate::types::Gpu {
    /// A GPU of a node's stats report, as policies' `node-info` shows it.
    fn from(g: &protocol::GpuStats) -> Self {
        Self {
            index: g.index,
            name: g.name.clone(),
            util_pct: g.util_pct,
            mem_used_mib: g.mem_used_mib,
            mem_total_mib: g.mem_total_mib,
            temperature_c: g.temperature_c,
            power_w: g.power_w,
        }
    }
}

impl From<&switchyard_core::Candidate> for CandidateRow {
    /// The row of one core candidate (same fields, same units).
    fn from(c: &switchyard_core::Candidate) -> Self {
        Self {
            node: c.node,
            in_flight: c.in_flight,
            max_concurrent: c.max_concurrent,
            node_in_flight: c.node_in_flight,
            cpu_pct: c.cpu_pct,
            mem_used_mib: c.mem_used_mib,
            mem_total_mib: c.mem_total_mib,
            gpu_count: c.gpu_count,
            gpu_util_pct: c.gpu_util_pct,
            gpu_mem_free_mib: c.gpu_mem_free_mib,
            gpu_mem_total_mib: c.gpu_mem_total_mib,
            latency_ms: c.latency_ms,
            latency_samples: c.latency_samples,
            cost_per_hour: c.cost_per_hour,
        }
    }
}

impl From<&[switchyard_core::Candidate]> for Candidates {
    /// The columns of the core's candidates, in order.
    fn from(candidates: &[switchyard_core::Candidate]) -> Self {
        let mut columns = Self::with_capacity(candidates.len());
        for c in candidates {
            columns.push(c.into());
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use crate::types::{CandidateRow, Candidates};

    fn row(node: u32) -> CandidateRow {
        CandidateRow {
            node,
            max_concurrent: 1,
            cost_per_hour: 0.5,
            ..CandidateRow::default()
        }
    }

    #[test]
    fn rows_round_trip_through_columns() {
        let rows: Vec<CandidateRow> = (0..3).map(row).collect();
        let cols: Candidates = rows.iter().copied().collect();
        assert_eq!(cols.len(), 3);
        assert_eq!(cols.check(), Ok(3));
        assert_eq!(cols.node, [0, 1, 2]);
        assert_eq!(cols.cost_per_hour, [0.5; 3]);
        for (i, want) in rows.iter().enumerate() {
            assert_eq!(cols.row(i).as_ref(), Some(want));
        }
        assert_eq!(cols.row(3), None);
    }

    #[test]
    fn ragged_and_empty_inputs_are_refused() {
        let mut cols: Candidates = (0..2).map(row).collect();
        cols.latency_samples.pop();
        let err = cols.check().expect_err("ragged");
        assert!(
            err.contains("latency-samples") && err.contains('1'),
            "{err}"
        );
        assert_eq!(cols.row(1), None);
        assert!(Candidates::with_capacity(4).check().is_err());
    }
}
