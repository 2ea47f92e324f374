//! Building and checking [`Candidates`], the column-layout pick input, from
//! and into [`Candidate`](crate::types::Candidate) rows: generated from the
//! one list of the WIT columns (`switchyard_policy_types::candidate_columns!`).

use crate::types::Candidates;

switchyard_policy_types::candidate_columns!(impl Candidates);

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

#[cfg(test)]
mod tests {
    use crate::types::{Candidate, Candidates, ModelLoad};

    fn row(node: u32) -> Candidate {
        Candidate {
            node,
            max_concurrent: 1,
            cost_per_hour: 0.5,
            ..Candidate::default()
        }
    }

    #[test]
    fn rows_round_trip_through_columns() {
        let rows: Vec<Candidate> = (0..3).map(row).collect();
        let cols: Candidates = rows.iter().copied().collect();
        assert_eq!(cols.len(), 3);
        assert_eq!(cols.check(), Ok(3));
        assert_eq!(cols.node, [0, 1, 2]);
        assert_eq!(cols.cost_per_hour, [0.5; 3]);
        for (i, want) in rows.iter().enumerate() {
            assert_eq!(cols.row(i).as_ref(), Some(want));
        }
        assert_eq!(cols.row(3), None);
        assert_eq!(cols.rows(), rows);
        assert_eq!(Candidates::from(rows.as_slice()), cols);
    }

    #[test]
    fn the_model_load_is_no_column() {
        let loaded = Candidate {
            model_load: Some(ModelLoad {
                waiting: 3,
                running: 1,
                kv_cache_pct: 40.0,
            }),
            ..row(7)
        };
        let cols = Candidates::from([loaded].as_slice());
        assert_eq!(cols.row(0), Some(row(7)));
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
        assert_eq!(cols.rows(), [row(0)], "as many as the shortest column");
        assert!(Candidates::with_capacity(4).check().is_err());
    }
}
