// Switchyard policy `least-loaded-js`, written in JavaScript.
//
// Least loaded first: a candidate's load is its calls of the service in
// flight relative to the most it takes at once (in-flight / max-concurrent,
// 0..1). Candidates are ranked by load, lowest first; equal loads are ordered
// by a rotation drawn from `request.random`, so ties spread over the tied
// nodes and a pick is deterministic for a given request. Stateless: `observe`
// ignores what it is told, and hints are ignored.
//
// Built into a WebAssembly component against the world `ranked-policy` of
// wit/policy.wit by `jco componentize` (see plugins/README.md and
// plugins/js/package.json's `build` script).

const NAME = "least-loaded-js";

// Candidate indices, least loaded first; ties by a rotation from req.random.
// u64 fields (random) arrive as BigInt, list<u32> columns as arrays of numbers.
function order(req, candidates) {
  const n = candidates.node.length;
  const start = Number(BigInt(req.random) % BigInt(n));
  const inFlight = candidates.inFlight;
  const maxConcurrent = candidates.maxConcurrent;
  const load = new Array(n);
  const indices = new Array(n);
  for (let i = 0; i < n; i++) {
    // max-concurrent > in-flight >= 0; guard the division all the same.
    const max = maxConcurrent[i];
    load[i] = max > 0 ? inFlight[i] / max : 1;
    indices[i] = i;
  }
  const rotation = (i) => (i - start + n) % n;
  indices.sort((a, b) => load[a] - load[b] || rotation(a) - rotation(b));
  return indices;
}

// The world-level exports of `policy`.
export function name() {
  return NAME;
}

export function pick(req, candidates) {
  return { tag: "route", val: order(req, candidates)[0] };
}

export function observe(_outcome) {}

// The `ranker` export: the whole ranking, so the gateway can fall back.
export const ranker = {
  rank(req, candidates) {
    return { tag: "order", val: order(req, candidates) };
  },
};
