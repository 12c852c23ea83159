/** Starts a Nest app on 127.0.0.1 for the bare-controller and the module servers. */
import type { INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import type { RunningServer } from './servers.js';

export async function startNest(
  module: Type<unknown>,
  adapter: 'express' | 'fastify',
): Promise<RunningServer> {
  const app: INestApplication = await NestFactory.create(
    module,
    adapter === 'fastify' ? new FastifyAdapter() : new ExpressAdapter(),
    // Errors only: a refused request on a text route would warn about its JSON error body.
    { logger: ['error'] },
  );
  // Express hashes every sent body for an ETag; the module writes its replies without one, so
  // the bare route must not pay for it either.
  if (adapter === 'express') (app as NestExpressApplication).set('etag', false);
  await app.listen(0, '127.0.0.1');
  const port = Number(new URL(await app.getUrl()).port);
  return { port, close: () => app.close() };
}
