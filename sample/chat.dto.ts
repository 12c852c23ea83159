import { IsNotEmpty, IsString, Matches, MaxLength } from 'class-validator';

/** Room names the page offers and the server accepts. */
export const ROOM_PATTERN = /^[a-z0-9][a-z0-9-]{0,31}$/;
export const LOBBY = 'lobby';

export class RoomDto {
  @IsString()
  @Matches(ROOM_PATTERN, { message: 'room must be 1-32 lower-case letters, digits or dashes' })
  room!: string;
}

export class SayDto extends RoomDto {
  @IsString()
  @IsNotEmpty()
  @MaxLength(500)
  text!: string;
}

export class TypingDto extends RoomDto {}
