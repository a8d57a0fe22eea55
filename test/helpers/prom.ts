/** Test helpers: scrape a /metrics endpoint and read series from the Prometheus text format. */
import { request } from './net.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (the subset prom-client writes). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let l: RegExpExecArray | null;
    while ((l = re.exec(m[2] ?? '')) !== null) labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    const v = m[3]!;
    out.push({ name: m[1]!, labels, value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  return out;
}

/** Sum of the samples of `name` whose labels include `match`. */
export function sum(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** The samples of `name` whose labels include `match`. */
export function series(samples: Sample[], name: string, match: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

export async function scrape(adminPort: number, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await request(`http://127.0.0.1:${adminPort}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${res.body}`);
  return parseMetrics(res.body);
}

/**
 * Scrapes until `ready(samples)` holds (a request's bookkeeping ends on the server's
 * 'close' event, a moment after the client has its response), up to `timeoutMs`.
 */
export async function scrapeUntil(adminPort: number, ready: (s: Sample[]) => boolean, timeoutMs = 5000): Promise<Sample[]> {
  const until = Date.now() + timeoutMs;
  let samples = await scrape(adminPort);
  while (!ready(samples) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 25));
    samples = await scrape(adminPort);
  }
  return samples;
}
