/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and ranks where the time went: self time per
 * function, total time per function (self + callees) and self time per package.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
}

export interface RankedEntry {
  name: string;
  /** Percent of the busy samples (idle excluded). */
  percent: number;
  /** CPU time per request served while profiling. */
  microsPerRequest: number;
}

export interface ProfileSummary {
  requests: number;
  busyMs: number;
  selfByFunction: RankedEntry[];
  totalByFunction: RankedEntry[];
  selfByPackage: RankedEntry[];
}

const IDLE = '(idle)';
const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));

/** `node_modules/@nestjs/core/router/x.js` → `@nestjs/core`; our own built files → lib or bench. */
export function packageOf(url: string): string {
  if (!url) return '(native / V8)';
  if (url.startsWith('node:')) return 'node internals';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules !== -1) {
    const parts = url.slice(modules + '/node_modules/'.length).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.includes('/bench/')) return 'bench (servers under test)';
  if (url.includes('/dist/')) return 'nestjs-web-pubsub (lib)';
  return url;
}

function shortLocation(url: string, line: number): string {
  if (!url) return '';
  let path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.startsWith(repositoryRoot)) path = path.slice(repositoryRoot.length);
  path = path.replace(/^.*\/node_modules\//, '');
  return `${path}:${line + 1}`;
}

function functionKey(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const name = functionName || (url ? '(anonymous)' : '');
  const where = shortLocation(url, lineNumber);
  return where ? `${name} ${where}` : name;
}

export function summarizeCpuProfile(file: string, requests: number, limit = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const hits = new Map<number, number>();
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const msPerSample = (profile.endTime - profile.startTime) / 1000 / profile.samples.length;
  const rank = (times: Map<string, number>, top = limit): RankedEntry[] =>
    [...times]
      .filter(([name]) => name !== IDLE)
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, samples]) => ({
        name,
        percent: (100 * samples) / busy,
        microsPerRequest: (1000 * samples * msPerSample) / requests,
      }));

  const selfByFunction = new Map<string, number>();
  const selfByPackage = new Map<string, number>();
  const totalByFunction = new Map<string, number>();
  let idle = 0;

  // Total time of a function: its samples and its callees', counted once even when it recurses.
  const openKeys = new Map<string, number>();
  const visit = (node: ProfileNode): number => {
    const key = functionKey(node);
    const self = hits.get(node.id) ?? 0;
    if (key === IDLE) idle += self;
    selfByFunction.set(key, (selfByFunction.get(key) ?? 0) + self);
    const area = key === IDLE ? IDLE : packageOf(node.callFrame.url);
    selfByPackage.set(area, (selfByPackage.get(area) ?? 0) + self);
    openKeys.set(key, (openKeys.get(key) ?? 0) + 1);
    let total = self;
    for (const child of node.children ?? []) total += visit(byId.get(child)!);
    const open = openKeys.get(key)! - 1;
    openKeys.set(key, open);
    if (open === 0) totalByFunction.set(key, (totalByFunction.get(key) ?? 0) + total);
    return total;
  };
  visit(profile.nodes[0]!);

  const busy = profile.samples.length - idle;
  // The root and the program frames say nothing about where the work is.
  for (const key of ['(root)', '(program)']) totalByFunction.delete(key);
  return {
    requests,
    busyMs: busy * msPerSample,
    selfByFunction: rank(selfByFunction),
    totalByFunction: rank(totalByFunction),
    // Every package, so that two profiles can be compared package by package.
    selfByPackage: rank(selfByPackage, Infinity),
  };
}

const code = (name: string) => `\`${name.replaceAll('|', '\\|')}\``;

export function profileMarkdown(title: string, summary: ProfileSummary): string {
  const table = (heading: string, entries: RankedEntry[]) =>
    [
      `### ${heading}`,
      '',
      '| % of busy | µs/req | function |',
      '| ---: | ---: | --- |',
      ...entries.map(
        (entry) =>
          `| ${entry.percent.toFixed(1)} | ${entry.microsPerRequest.toFixed(2)} | ${code(entry.name)} |`,
      ),
      '',
    ].join('\n');
  const perRequest = (1000 * summary.busyMs) / summary.requests;
  return [
    `## ${title}`,
    '',
    `${summary.requests} requests, busy ${summary.busyMs.toFixed(0)} ms (idle excluded), ${perRequest.toFixed(1)} µs per request.`,
    '',
    table(
      'Self time by package',
      summary.selfByPackage.filter((entry) => entry.percent >= 0.1),
    ),
    table('Self time by function', summary.selfByFunction),
    table('Total time (self + callees) by function', summary.totalByFunction),
  ].join('\n');
}

/** Per package, what one server spends per request beyond another (e.g. the module vs bare Nest). */
export function comparisonMarkdown(
  title: string,
  subject: ProfileSummary,
  reference: ProfileSummary,
): string {
  const perPackage = (summary: ProfileSummary) =>
    new Map(summary.selfByPackage.map((entry) => [entry.name, entry.microsPerRequest]));
  const mine = perPackage(subject);
  const theirs = perPackage(reference);
  const rows = [...new Set([...mine.keys(), ...theirs.keys()])]
    .map((name) => ({ name, mine: mine.get(name) ?? 0, theirs: theirs.get(name) ?? 0 }))
    .filter((row) => Math.abs(row.mine - row.theirs) >= 0.1)
    .sort((a, b) => b.mine - b.theirs - (a.mine - a.theirs));
  const total = (summary: ProfileSummary) => (1000 * summary.busyMs) / summary.requests;
  return [
    `## ${title}`,
    '',
    '| package | µs/req | reference µs/req | difference |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map(
      (row) =>
        `| ${code(row.name)} | ${row.mine.toFixed(2)} | ${row.theirs.toFixed(2)} | ${(row.mine - row.theirs).toFixed(2)} |`,
    ),
    `| **all** | ${total(subject).toFixed(2)} | ${total(reference).toFixed(2)} | ${(total(subject) - total(reference)).toFixed(2)} |`,
    '',
  ].join('\n');
}
