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
  ms: number;
}

export interface ProfileSummary {
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

function rank(times: Map<string, number>, busy: number, msPerSample: number, limit: number) {
  return [...times]
    .filter(([name]) => name !== IDLE)
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([name, samples]) => ({
      name,
      percent: (100 * samples) / busy,
      ms: samples * msPerSample,
    }));
}

export function summarizeCpuProfile(file: string, limit = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const hits = new Map<number, number>();
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const msPerSample = (profile.endTime - profile.startTime) / 1000 / profile.samples.length;

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
    busyMs: busy * msPerSample,
    selfByFunction: rank(selfByFunction, busy, msPerSample, limit),
    totalByFunction: rank(totalByFunction, busy, msPerSample, limit),
    selfByPackage: rank(selfByPackage, busy, msPerSample, limit),
  };
}

export function profileMarkdown(title: string, summary: ProfileSummary): string {
  const table = (heading: string, entries: RankedEntry[]) =>
    [
      `### ${heading}`,
      '',
      '| % of busy | ms | function |',
      '| ---: | ---: | --- |',
      ...entries.map(
        (entry) =>
          `| ${entry.percent.toFixed(1)} | ${entry.ms.toFixed(0)} | \`${entry.name.replaceAll('|', '\\|')}\` |`,
      ),
      '',
    ].join('\n');
  return [
    `## ${title}`,
    '',
    `Busy time ${summary.busyMs.toFixed(0)} ms (idle excluded).`,
    '',
    table('Self time by package', summary.selfByPackage),
    table('Self time by function', summary.selfByFunction),
    table('Total time (self + callees) by function', summary.totalByFunction),
  ].join('\n');
}
