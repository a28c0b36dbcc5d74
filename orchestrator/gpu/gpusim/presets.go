package gpusim

// Presets: machines as nvidia-smi shows them (names, memory, bus ids and idle
// readings taken from real nodes). seed makes the UUIDs; give every node its
// own (e.g. its host name) so that no two nodes share a GPU UUID; GPUs of
// different presets never share one either, so presets can be mixed.

// H100x8 is an 8-GPU H100 SXM5 node (DGX/HGX H100 bus layout).
func H100x8(seed string) []GPU {
	buses := []string{"18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"}
	gpus := make([]GPU, len(buses))
	for i, b := range buses {
		gpus[i] = GPU{
			UUID: UUID(seed+"/h100x8", i), Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:" + b + ":00.0",
			MemoryTotalMiB: 81559, MemoryUsedMiB: 1, TemperatureC: 29 + i%4,
			PowerDrawW: 69.5 + float64(i), PowerLimitW: 700, Persistence: true,
			DriverVersion: "550.90.07",
		}
	}
	return gpus
}

// A100x2 is a server with two A100 80GB PCIe cards, MIG disabled.
func A100x2(seed string) []GPU {
	buses := []string{"31", "4B"}
	gpus := make([]GPU, len(buses))
	for i, b := range buses {
		gpus[i] = GPU{
			UUID: UUID(seed+"/a100x2", i), Name: "NVIDIA A100 80GB PCIe", PCIBusID: "00000000:" + b + ":00.0",
			MemoryTotalMiB: 81920, MemoryUsedMiB: 0, TemperatureC: 34 + i,
			PowerDrawW: 44.1 + float64(i), PowerLimitW: 300, Persistence: true,
			DriverVersion: "535.183.01",
		}
	}
	return gpus
}

// RTX4090x4 is a 4-GPU consumer build with no display attached.
func RTX4090x4(seed string) []GPU {
	buses := []string{"01", "21", "41", "61"}
	gpus := make([]GPU, len(buses))
	for i, b := range buses {
		gpus[i] = GPU{
			UUID: UUID(seed+"/rtx4090x4", i), Name: "NVIDIA GeForce RTX 4090", PCIBusID: "00000000:" + b + ":00.0",
			MemoryTotalMiB: 24564, MemoryUsedMiB: 1, TemperatureC: 31 + i,
			PowerDrawW: 12.3 + float64(i), PowerLimitW: 450,
			DriverVersion: "550.120",
		}
	}
	return gpus
}

// T4x1 is a cloud VM with one Tesla T4 (AWS g4dn bus layout).
func T4x1(seed string) []GPU {
	return []GPU{{
		UUID: UUID(seed+"/t4x1", 0), Name: "Tesla T4", PCIBusID: "00000000:00:1E.0",
		MemoryTotalMiB: 15360, MemoryUsedMiB: 0, TemperatureC: 27,
		PowerDrawW: 13.6, PowerLimitW: 70, Persistence: true,
		DriverVersion: "535.183.01",
	}}
}

// GB10x1 is a DGX Spark-class box: one GB10 whose memory is the host's, so
// nvidia-smi reports its memory as [N/A].
func GB10x1(seed string) []GPU {
	return []GPU{{
		UUID: UUID(seed+"/gb10x1", 0), Name: "NVIDIA GB10", PCIBusID: "0000000F:01:00.0",
		UnifiedMemory: true, TemperatureC: 41, PowerDrawW: 4.5,
		DriverVersion: "580.95.05",
	}}
}

// WorkstationWithDisplay is a 4-GPU workstation whose GPU 0 (the lowest bus
// id, so index 0 to both nvidia-smi and CUDA in PCI_BUS_ID order) drives the
// monitor: 412 MiB of it are taken by Xorg and the desktop before any job.
// Xorg is not a compute process (see the package doc); register one with
// AddProcess to test a foreign process on the display GPU.
func WorkstationWithDisplay(seed string) []GPU {
	gpus := []GPU{{
		UUID: UUID(seed+"/workstation", 0), Name: "NVIDIA RTX A4000", PCIBusID: "00000000:01:00.0",
		MemoryTotalMiB: 16376, MemoryUsedMiB: 412, UtilizationPct: 3, TemperatureC: 44,
		PowerDrawW: 17.9, PowerLimitW: 140, Display: true, DriverVersion: "550.120",
	}}
	for i, b := range []string{"21", "41", "61"} {
		gpus = append(gpus, GPU{
			UUID: UUID(seed+"/workstation", i+1), Name: "NVIDIA RTX A6000", PCIBusID: "00000000:" + b + ":00.0",
			MemoryTotalMiB: 49140, MemoryUsedMiB: 1, TemperatureC: 36 + i,
			PowerDrawW: 21.4 + float64(i), PowerLimitW: 300, DriverVersion: "550.120",
		})
	}
	return gpus
}
