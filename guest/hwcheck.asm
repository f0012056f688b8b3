; hwcheck: a firmware-less x86-64 guest that runs morsel's page tables on
; QEMU's MMU, so the tables are judged by an implementation we did not write.
;
; Loaded with `-bios` as a 64 KiB image: QEMU maps it just below 4 GiB, so
; the CPU starts at the reset vector 0xFFFFFFF0 (the image's last 16 bytes)
; and no SeaBIOS ever touches low memory, which is the region file itself.
;
; Guest-physical memory == the region file (frame N = bytes N*4096..). The
; region reserves frames 1..0x9F for a guest; this one uses
;   frame 1 (0x1000)          boot parameter block, written by the host
;   frames 0x10..0x14         its own paging tables, IDT and variables
;   frames 0x20..0x2F         stack
; With `share=off` every guest write (these, A/D bits, check writes) lands
; in a private copy: the region file is never modified.
;
; Boot: real mode -> protected mode -> long mode (4- or 5-level, CR4.LA57)
; on the guest's own tables, which map low 4 GiB 1:1 (for the switch) and
; two 1 GiB aliases in the top 2 GiB of the address space:
;   RAM_HI = 0xFFFFFFFF80000000 -> physical 0          (data, stack, params)
;   ROM_HI = 0xFFFFFFFFFFFF0000 -> physical 0xFFFF0000 (this code, GDT)
; Then it links that top-half table into entry 511 of the morsel address
; space's root table (morsel spaces use only the lower half) and loads CR3
; with the space's root: from then on, every check's address is translated
; by morsel's tables alone, while the code keeps running from the alias.
;
; Parameter block (little-endian, frame 1):
;   0 magic "MORSHWCK"   8 version u32 (1)   12 levels u32 (4|5)
;  16 root table physical address u64       24 check count u32 (<= 127)
;  32 checks, 32 bytes each: kind u32, pad u32, vaddr u64, value u64, err u64
; Kinds: 1 READ (8 bytes == value)  2 WRITE_READ (write value, read it back)
;        3 EXEC (call vaddr; rax == value)
;        4 PF_READ / 5 PF_WRITE / 6 PF_EXEC: must raise #PF with
;          CR2 == vaddr and (error code & 0x1F) == err (P W U RSVD I/D).
; Output on COM1, one line per check ("CHECK i OK" / "CHECK i FAIL ..."),
; then exit through isa-debug-exit (port 0xF4): 0x10 all passed, 0x11 not.

ROM_LO      equ 0xFFFF0000
ROM_HI      equ 0xFFFFFFFFFFFF0000
RAM_HI      equ 0xFFFFFFFF80000000

PARAMS      equ 0x1000
PDPT        equ 0x10000          ; shared PDPT: 1 GiB pages
PML4_BOOT   equ 0x11000          ; PML4 of the guest's boot tables
PML5_BOOT   equ 0x12000          ; PML5 of the guest's boot tables (LA57)
IDT         equ 0x13000
VARS        equ 0x14000
STACK_TOP   equ 0x30000

; variables (accessed through RAM_HI once in long mode)
ARMED       equ RAM_HI + VARS + 0    ; byte: a probe is in flight
FAULTED     equ RAM_HI + VARS + 1    ; byte: the probe raised #PF
SAVED_RSP   equ RAM_HI + VARS + 8
RESUME      equ RAM_HI + VARS + 16
PF_CR2      equ RAM_HI + VARS + 24
PF_ERR      equ RAM_HI + VARS + 32
NFAIL       equ RAM_HI + VARS + 40
P_HI        equ RAM_HI + PARAMS

MAX_CHECKS  equ 127
COM1        equ 0x3F8
EXIT_PORT   equ 0xF4
EXIT_OK     equ 0x10
EXIT_FAIL   equ 0x11

%define HI(label) (ROM_HI + ((label) - $$))

        org ROM_LO

; ---------------------------------------------------------------- real mode
        bits 16
start16:
        cli
        cld
        o32 lgdt [cs:gdt_ptr32 - $$]
        mov eax, cr0
        or eax, 1                       ; PE
        mov cr0, eax
        jmp dword 0x08:start32

; ----------------------------------------------------------- protected mode
        bits 32
start32:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        mov esp, STACK_TOP

        ; Without these the guest cannot even get to the checks.
        mov eax, 0x80000001
        cpuid
        mov esi, msg_nolm
        bt edx, 29                      ; long mode
        jnc fatal32
        mov esi, msg_nonx
        bt edx, 20                      ; NX: morsel sets bit 63
        jnc fatal32
        mov esi, msg_no1g
        bt edx, 26                      ; 1 GiB pages for the guest's own tables
        jnc fatal32

        ; zero the guest's tables, IDT and variables
        mov edi, PDPT
        mov ecx, 5 * 1024
        xor eax, eax
        rep stosd

        ; PDPT: [0..3] identity 1 GiB pages, [510] -> 0 (RAM_HI), [511] -> 3 GiB (ROM_HI)
        mov dword [PDPT + 0*8], 0x00000083      ; P RW PS
        mov dword [PDPT + 1*8], 0x40000083
        mov dword [PDPT + 2*8], 0x80000083
        mov dword [PDPT + 3*8], 0xC0000083
        mov dword [PDPT + 510*8], 0x00000083
        mov dword [PDPT + 511*8], 0xC0000083
        mov dword [PML4_BOOT + 0*8], PDPT + 3
        mov dword [PML4_BOOT + 511*8], PDPT + 3
        mov dword [PML5_BOOT + 0*8], PML4_BOOT + 3
        mov dword [PML5_BOOT + 511*8], PML4_BOOT + 3

        mov eax, 1 << 5                 ; PAE
        mov ebx, PML4_BOOT
        cmp dword [PARAMS + 12], 5
        jne .cr4
        push eax
        mov eax, 7
        xor ecx, ecx
        cpuid
        pop eax
        mov esi, msg_nola57
        bt ecx, 16                      ; LA57
        jnc fatal32
        or eax, 1 << 12                 ; LA57: only settable while paging is off
        mov ebx, PML5_BOOT
.cr4:   mov cr4, eax
        mov cr3, ebx
        mov ecx, 0xC0000080             ; EFER
        rdmsr
        or eax, (1 << 8) | (1 << 11)    ; LME, NXE (else bit 63 is reserved)
        wrmsr
        mov eax, cr0
        or eax, (1 << 31) | (1 << 16)   ; PG, WP (else ring-0 writes ignore R/W=0)
        mov cr0, eax
        jmp 0x18:start64low

; Prints the zero-terminated string at esi and fails: the guest cannot continue.
fatal32:
        mov dx, COM1
.next:  lodsb
        test al, al
        jz .exit
        out dx, al
        jmp .next
.exit:  mov dx, EXIT_PORT
        mov eax, EXIT_FAIL
        out dx, eax
.halt:  hlt
        jmp .halt

; ---------------------------------------------------------------- long mode
        bits 64
start64low:
        mov rax, HI(start64)            ; leave the identity map for the alias
        jmp rax

start64:
        lgdt [rel gdt_ptr64]            ; the GDT must stay reachable after CR3 moves
        mov rsp, RAM_HI + STACK_TOP

        ; IDT: vectors 0..31, stubs 16 bytes apart
        lea rsi, [rel stub_0]
        mov rdi, RAM_HI + IDT
        mov ecx, 32
.idt:   mov rax, rsi
        and eax, 0xFFFF
        mov rdx, (0x18 << 16) | (0x8E << 40)    ; selector, present interrupt gate
        or rax, rdx
        mov rdx, rsi
        shr rdx, 16
        and rdx, 0xFFFF
        shl rdx, 48
        or rax, rdx
        mov [rdi], rax
        mov rax, rsi
        shr rax, 32
        mov [rdi + 8], rax
        add rsi, 16
        add rdi, 16
        loop .idt
        lidt [rel idt_ptr]

        lea rsi, [rel msg_begin]
        call puts
        mov eax, [P_HI + 12]
        call putdec
        call newline

        ; validate the parameter block
        lea rsi, [rel msg_badparams]
        mov rax, [P_HI]
        mov rcx, 'MORSHWCK'
        cmp rax, rcx
        jne fatal
        cmp dword [P_HI + 8], 1
        jne fatal
        cmp dword [P_HI + 24], MAX_CHECKS
        ja fatal
        mov eax, [P_HI + 12]
        cmp eax, 4
        je .lv
        cmp eax, 5
        jne fatal
.lv:    ; CR4.LA57 must agree with the requested levels
        mov rdx, cr4
        shr rdx, 12
        and edx, 1
        add edx, 4
        cmp eax, edx
        jne fatal
        mov rdi, [P_HI + 16]            ; root table: 4 KiB aligned, below the PCI hole
        test edi, 0xFFF
        jnz fatal
        mov rax, 0xE0000000
        cmp rdi, rax
        jae fatal

        ; Link the top half into the space root (identity map still active).
        ; A morsel space never uses entry 511: if it does, that is a finding.
        lea rsi, [rel msg_root511]
        cmp qword [rdi + 511*8], 0
        jne fatal
        mov rax, PDPT + 3
        cmp dword [P_HI + 12], 5
        jne .link
        mov rax, PML4_BOOT + 3                 ; 5-level: PML5[511] -> PML4 whose [511] -> PDPT
.link:  mov [rdi + 511*8], rax
        mov cr3, rdi                    ; from here on: morsel's tables

        xor r12d, r12d                  ; check index
        mov qword [NFAIL], 0
        mov rbx, P_HI + 32
.loop:  cmp r12d, [P_HI + 24]
        jae .done
        call run_check
        inc r12d
        add rbx, 32
        jmp .loop
.done:  lea rsi, [rel msg_done]
        call puts
        mov eax, r12d
        call putdec
        lea rsi, [rel msg_failed]
        call puts
        mov rax, [NFAIL]
        call putdec
        call newline
        mov eax, EXIT_OK
        cmp qword [NFAIL], 0
        je exit
        mov eax, EXIT_FAIL
        jmp exit

; Runs the check at rbx (index r12) and prints its line.
run_check:
        mov rdi, [rbx + 8]
        mov rsi, [rbx + 16]
        mov byte [FAULTED], 0
        lea rax, [rel .after]
        mov [RESUME], rax
        mov [SAVED_RSP], rsp
        mov byte [ARMED], 1
        mov eax, [rbx]
        cmp eax, 2
        je .write_read
        cmp eax, 5
        je .write
        cmp eax, 3
        je .exec
        cmp eax, 6
        je .exec
        ; the probes: a #PF in any of them resumes at .after with FAULTED set
.read:  mov rax, [rdi]
        jmp .probed
.write_read:
        mov [rdi], rsi
        mov rax, [rdi]
        jmp .probed
.write: mov [rdi], rsi
        xor eax, eax
        jmp .probed
.exec:  call rdi
.probed:
        mov byte [ARMED], 0
.after: mov r13, rax                    ; probe result (meaningless after a fault)
        lea rsi, [rel msg_check]
        call puts
        mov eax, r12d
        call putdec
        mov eax, [rbx]
        cmp eax, 4
        jae .want_fault
        ; kinds 1..3: no fault, result == value
        cmp byte [FAULTED], 0
        jne .bad_fault
        cmp r13, [rbx + 16]
        jne .bad_value
        jmp .ok
.want_fault:
        cmp byte [FAULTED], 0
        je .no_fault
        mov rax, [PF_CR2]
        cmp rax, [rbx + 8]
        jne .bad_fault
        mov rax, [PF_ERR]
        and eax, 0x1F
        cmp rax, [rbx + 24]
        jne .bad_fault
.ok:    lea rsi, [rel msg_ok]
        call puts
        jmp newline
.bad_value:
        lea rsi, [rel msg_got]
        call puts
        mov rax, r13
        call puthex
        lea rsi, [rel msg_want]
        call puts
        mov rax, [rbx + 16]
        call puthex
        jmp .failed
.no_fault:
        lea rsi, [rel msg_nofault]
        call puts
        mov rax, [rbx + 24]
        call puthex
        jmp .failed
.bad_fault:
        lea rsi, [rel msg_fail_pf]
        call puts
        mov rax, [PF_CR2]
        call puthex
        lea rsi, [rel msg_pf_err]
        call puts
        mov rax, [PF_ERR]
        call puthex
        mov eax, [rbx]
        cmp eax, 4
        jb .failed
        lea rsi, [rel msg_want_err]
        call puts
        mov rax, [rbx + 24]
        call puthex
.failed:
        inc qword [NFAIL]
        jmp newline

; Exception entry: [rsp] vector, [rsp+8] error code, [rsp+16] rip.
; A #PF during an armed probe is expected: record it, drop the frame and
; continue at the probe's resume address (no iretq needed: ring 0, IF=0).
exc_common:
        cmp qword [rsp], 14
        jne .fatal
        cmp byte [ARMED], 0
        je .fatal
        mov rax, cr2
        mov [PF_CR2], rax
        mov rax, [rsp + 8]
        mov [PF_ERR], rax
        mov byte [ARMED], 0
        mov byte [FAULTED], 1
        mov rsp, [SAVED_RSP]
        jmp [RESUME]
.fatal: lea rsi, [rel msg_exc]
        call puts
        mov rax, [rsp]
        call putdec
        lea rsi, [rel msg_pf_err]
        call puts
        mov rax, [rsp + 8]
        call puthex
        lea rsi, [rel msg_rip]
        call puts
        mov rax, [rsp + 16]
        call puthex
        lea rsi, [rel msg_pf_cr2]
        call puts
        mov rax, cr2
        call puthex
        call newline
        mov eax, EXIT_FAIL
        jmp exit

; Prints the string at rsi, then fails.
fatal:  call puts
        call newline
        mov eax, EXIT_FAIL
exit:   mov dx, EXIT_PORT
        out dx, eax
.halt:  hlt
        jmp .halt

; --- serial output (COM1; QEMU's UART needs no setup) ---
putc:   push rdx
        push rax
        mov dx, COM1 + 5
        mov ecx, 50000000               ; bounded wait for THR empty (a loaded host drains slowly)
.wait:  in al, dx
        test al, 0x20
        jnz .send
        loop .wait
.send:  pop rax
        mov dx, COM1
        out dx, al
        pop rdx
        ret

puts:   lodsb
        test al, al
        jz .end
        call putc
        jmp puts
.end:   ret

newline:
        mov al, 10
        jmp putc

; rax as 16 hex digits with 0x
puthex: push rbx
        mov rbx, rax
        mov al, '0'
        call putc
        mov al, 'x'
        call putc
        mov r8d, 16
.dig:   rol rbx, 4
        mov eax, ebx
        and eax, 0xF
        add al, '0'
        cmp al, '9'
        jbe .out
        add al, 'a' - '9' - 1
.out:   call putc
        dec r8d
        jnz .dig
        pop rbx
        ret

; eax (unsigned) in decimal
putdec: mov r8d, 10
        xor r9d, r9d                    ; digit count
.div:   xor edx, edx
        div r8d
        push rdx
        inc r9d
        test eax, eax
        jnz .div
.pr:    pop rax
        add al, '0'
        call putc
        dec r9d
        jnz .pr
        ret

; --- exception stubs: one per vector, 16 bytes apart (the IDT loop relies on it)
%macro STUB 1
        align 16
stub_%1:
%if !((%1 == 8) || (%1 >= 10 && %1 <= 14) || (%1 == 17) || (%1 == 21) || (%1 == 29) || (%1 == 30))
        push 0                          ; vectors without a CPU error code
%endif
        push %1
        jmp exc_common
%endmacro
%assign v 0
%rep 32
        STUB v
%assign v v + 1
%endrep

; --- descriptor tables (accessed bits preset: the CPU never writes this ROM)
        align 16
gdt:    dq 0
        dq 0x00CF9B000000FFFF           ; 0x08 code32 flat
        dq 0x00CF93000000FFFF           ; 0x10 data flat
        dq 0x00AF9B000000FFFF           ; 0x18 code64
gdt_end:
gdt_ptr32:
        dw gdt_end - gdt - 1
        dd gdt                          ; ROM_LO alias: no paging yet
        align 8
gdt_ptr64:
        dw gdt_end - gdt - 1
        dq HI(gdt)
        align 8
idt_ptr:
        dw 32 * 16 - 1
        dq RAM_HI + IDT

msg_begin:      db "HWCHECK BEGIN levels=", 0
msg_done:       db "HWCHECK DONE checks=", 0
msg_failed:     db " failed=", 0
msg_check:      db "CHECK ", 0
msg_ok:         db " OK", 0
msg_got:        db " FAIL got=", 0
msg_want:       db " want=", 0
msg_nofault:    db " FAIL no #PF, want-err=", 0
msg_fail_pf:    db " FAIL #PF cr2=", 0
msg_pf_cr2:     db " cr2=", 0
msg_pf_err:     db " err=", 0
msg_want_err:   db " want-err=", 0
msg_rip:        db " rip=", 0
msg_exc:        db "HWCHECK FATAL exception ", 0
msg_badparams:  db "HWCHECK FATAL bad parameter block", 0
msg_root511:    db "HWCHECK FATAL root entry 511 in use", 0
msg_nolm:       db "HWCHECK FATAL no long mode", 10, 0
msg_nonx:       db "HWCHECK FATAL no NX", 10, 0
msg_no1g:       db "HWCHECK FATAL no 1 GiB pages", 10, 0
msg_nola57:     db "HWCHECK FATAL no LA57 (5-level paging)", 10, 0

; --- reset vector: the CPU starts here (CS base 0xFFFF0000, IP 0xFFF0)
        times 0xFFF0 - ($ - $$) db 0xF4
        bits 16
        jmp start16
        times 0x10000 - ($ - $$) db 0xF4
