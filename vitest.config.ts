import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const lib = (file: string) => fileURLToPath(new URL(`./lib/${file}`, import.meta.url));

export default defineConfig({
  // Nest reads constructor and parameter types through decorator metadata.
  oxc: { decorator: { legacy: true, emitDecoratorMetadata: true } },
  resolve: {
    // Tests and the sample import the package by its public names, served from the sources.
    alias: [
      { find: /^nestjs-web-pubsub\/emulator$/, replacement: lib('web-pubsub.emulator.ts') },
      { find: /^nestjs-web-pubsub\/testing$/, replacement: lib('web-pubsub.testing.ts') },
      { find: /^nestjs-web-pubsub$/, replacement: lib('index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.spec.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
});
