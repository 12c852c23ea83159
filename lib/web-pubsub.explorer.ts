import { randomUUID } from 'node:crypto';
import {
  Inject,
  Injectable,
  Logger,
  ValidationPipe,
  type OnModuleInit,
  type PipeTransform,
  type Type,
} from '@nestjs/common';
import {
  DiscoveryService,
  ExternalContextCreator,
  MetadataScanner,
  ModuleRef,
  type ParamsFactory,
} from '@nestjs/core';
import {
  ARGS_METADATA,
  EVENT_CONTEXT_PARAM,
  EVENT_DATA_PARAM,
  HANDLER_METADATA,
  HUB_METADATA,
  WEB_PUBSUB_CONFIG,
  WEB_PUBSUB_CONTEXT_TYPE,
} from './web-pubsub.constants.js';
import type { WebPubSubContext } from './web-pubsub.context.js';
import type { HandlerMetadata } from './web-pubsub.decorators.js';
import { Messages, WebPubSubConfigurationError } from './web-pubsub.errors.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';
import type { WebPubSubEventKind } from './web-pubsub.protocol.js';

/** One decorated method, ready to be called with the decoded payload and the context. */
export interface EventHandler {
  /** `ChatHub.say`, for logs and errors. */
  name: string;
  invoke(data: unknown, context: WebPubSubContext): Promise<unknown>;
}

/** The handlers of one hub, looked up per request. */
export interface HubHandlers {
  hub: string;
  system: Map<Exclude<WebPubSubEventKind, 'user'>, EventHandler>;
  userEvents: Map<string, EventHandler>;
  /** `@OnUserEvent()` without a name. */
  anyUserEvent?: EventHandler;
}

interface ParamMetadata {
  index: number;
  data: unknown;
  pipes: (Type<PipeTransform> | PipeTransform)[];
}

/** Types a payload is never validated as (ValidationPipe passes them through anyway). */
const PLAIN_TYPES = new Set<unknown>([
  String,
  Number,
  Boolean,
  Object,
  Array,
  Buffer,
  Uint8Array,
  ArrayBuffer,
  Date,
  Promise,
  undefined,
]);

/** Handler arguments are `[payload, context]`: see `getWebPubSubEventData`/`getWebPubSubContext`. */
const paramsFactory: ParamsFactory = {
  exchangeKeyForValue(type, _data, args: unknown[]) {
    if (type === EVENT_DATA_PARAM) return args[0];
    if (type === EVENT_CONTEXT_PARAM) return args[1];
    return undefined;
  },
};

type InstanceWrapper = ReturnType<DiscoveryService['getProviders']>[number];

/**
 * Finds the `@WebPubSubHub()` providers once, at start-up, and builds the lookup table the
 * dispatcher uses on every request. Handlers run through Nest's `ExternalContextCreator`, so
 * `@UseGuards`, `@UseInterceptors` and `@UsePipes` work on them as on controller routes.
 */
@Injectable()
export class WebPubSubExplorer implements OnModuleInit {
  private readonly logger = new Logger('WebPubSubModule');
  private readonly hubs = new Map<string, HubHandlers>();
  /** Each module instance keeps its own copy of the parameter metadata, with its own pipes. */
  private readonly argsKey = `${ARGS_METADATA}:${randomUUID()}`;
  private validationPipe?: ValidationPipe;

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly contextCreator: ExternalContextCreator,
    private readonly moduleRef: ModuleRef,
    @Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig,
  ) {}

  /** The handlers of a hub (names compared case-insensitively). */
  getHub(hub: string): HubHandlers | undefined {
    return this.hubs.get(hub.toLowerCase());
  }

  async onModuleInit(): Promise<void> {
    const seen = new Set<object>();
    for (const wrapper of this.discovery.getProviders()) {
      const hub = this.hubOf(wrapper);
      if (!hub) continue;
      if (!wrapper.isDependencyTreeStatic()) {
        this.logger.warn(Messages.notStatic(wrapper.name));
        continue;
      }
      const instance = wrapper.instance as object | undefined;
      if (!instance || seen.has(instance)) continue;
      seen.add(instance);
      await this.registerClass(hub, instance);
    }
  }

  private hubOf(wrapper: InstanceWrapper): string | undefined {
    // Factory and value providers have no metatype of their own: look at the instance's class,
    // or at the token when it is the class (a scoped factory has no static instance).
    const candidates = [
      (wrapper.instance as object | undefined)?.constructor,
      wrapper.metatype,
      wrapper.token,
    ];
    for (const target of candidates) {
      if (typeof target !== 'function') continue;
      const hub: string | undefined = Reflect.getMetadata(HUB_METADATA, target);
      if (hub) return hub;
    }
    return undefined;
  }

  private async registerClass(hub: string, instance: object): Promise<void> {
    const prototype = Object.getPrototypeOf(instance) as Record<string, unknown>;
    const table = this.tableFor(hub);
    for (const methodName of this.scanner.getAllMethodNames(prototype)) {
      const method = prototype[methodName] as (...args: unknown[]) => unknown;
      const entries: HandlerMetadata[] | undefined = Reflect.getMetadata(HANDLER_METADATA, method);
      if (!entries?.length) continue;
      const name = `${instance.constructor.name}.${methodName}`;
      const handler = await this.createHandler(instance, method, methodName, name);
      for (const entry of entries) this.addHandler(table, entry, handler);
    }
  }

  private tableFor(hub: string): HubHandlers {
    const key = hub.toLowerCase();
    let table = this.hubs.get(key);
    if (!table) {
      table = { hub, system: new Map(), userEvents: new Map() };
      this.hubs.set(key, table);
    }
    return table;
  }

  private addHandler(table: HubHandlers, entry: HandlerMetadata, handler: EventHandler): void {
    const duplicate = (event: string, existing?: EventHandler) => {
      if (existing) {
        throw new WebPubSubConfigurationError(
          Messages.duplicateHandler(table.hub, event, existing.name, handler.name),
        );
      }
    };
    if (entry.kind !== 'user') {
      duplicate(entry.kind, table.system.get(entry.kind));
      table.system.set(entry.kind, handler);
    } else if (entry.userEvent === undefined) {
      duplicate('any user event', table.anyUserEvent);
      table.anyUserEvent = handler;
    } else {
      duplicate(`user event ${entry.userEvent}`, table.userEvents.get(entry.userEvent));
      table.userEvents.set(entry.userEvent, handler);
    }
  }

  private async createHandler(
    instance: object,
    method: (...args: unknown[]) => unknown,
    methodName: string,
    name: string,
  ): Promise<EventHandler> {
    await this.prepareArgsMetadata(instance, methodName, name);
    const invoke = this.contextCreator.create(
      instance,
      method,
      methodName,
      this.argsKey,
      paramsFactory,
      undefined,
      undefined,
      { guards: true, interceptors: true, filters: false },
      WEB_PUBSUB_CONTEXT_TYPE,
    );
    return { name, invoke: (data, context) => invoke(data, context) };
  }

  /**
   * Copies the method's parameter metadata under this module's key, with class pipes resolved
   * to instances and, for a payload typed with a class, the validation pipe in front.
   */
  private async prepareArgsMetadata(instance: object, methodName: string, name: string) {
    const target = instance.constructor;
    const args: Record<string, ParamMetadata> =
      Reflect.getMetadata(ARGS_METADATA, target, methodName) ?? {};
    const paramTypes: unknown[] =
      Reflect.getMetadata('design:paramtypes', instance, methodName) ?? [];
    const copy: Record<string, ParamMetadata> = {};
    for (const [key, param] of Object.entries(args)) {
      const pipes = await Promise.all(param.pipes.map((pipe) => this.resolvePipe(pipe)));
      if (key.startsWith(`${EVENT_DATA_PARAM}:`) && !PLAIN_TYPES.has(paramTypes[param.index])) {
        const validation = await this.getValidationPipe(name);
        if (validation) pipes.unshift(validation);
      }
      copy[key] = { ...param, pipes };
    }
    Reflect.defineMetadata(this.argsKey, copy, target, methodName);
  }

  private async resolvePipe(pipe: Type<PipeTransform> | PipeTransform): Promise<PipeTransform> {
    if (typeof pipe !== 'function') return pipe;
    try {
      return this.moduleRef.get(pipe, { strict: false });
    } catch {
      return this.moduleRef.create(pipe);
    }
  }

  private async getValidationPipe(handlerName: string): Promise<ValidationPipe | undefined> {
    if (this.config.validation === false) return undefined;
    if (!this.validationPipe) {
      try {
        await Promise.all([import('class-validator'), import('class-transformer')]);
      } catch {
        throw new WebPubSubConfigurationError(Messages.missingValidator(handlerName));
      }
      this.validationPipe = new ValidationPipe(this.config.validation);
    }
    return this.validationPipe;
  }
}
