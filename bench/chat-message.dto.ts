import { IsInt, IsOptional, IsString, MaxLength, Min } from 'class-validator';

/** The payload of the validated-DTO workload; the same class for the module and the bare route. */
export class ChatMessageDto {
  @IsString()
  @MaxLength(500)
  text!: string;

  @IsInt()
  @Min(0)
  sequence!: number;

  @IsOptional()
  @IsString({ each: true })
  tags?: string[];
}
